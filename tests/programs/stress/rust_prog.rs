//! A Rust program under the tracer: Vec, String, Box, HashMap, BTreeMap, Rc/Arc, threads with channels,
//! a panic caught with catch_unwind (unwinding through Rust frames allocates), formatting. Rust's std allocates
//! through the system malloc, so every one of these goes through the interposed functions.
//!
//! stdout is deterministic: a few figures and "ok".
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let mut v: Vec<u64> = Vec::new();
    for i in 0..n as u64 {
        v.push(i * 3);
    }
    let mut words: HashMap<String, usize> = HashMap::new();
    for i in 0..n / 10 {
        *words.entry(format!("w{}", i % 5000)).or_default() += 1;
    }
    let mut tree: BTreeMap<u64, Box<[u8]>> = BTreeMap::new();
    for i in 0..20_000u64 {
        tree.insert(i, vec![(i % 251) as u8; (i % 97) as usize + 1].into_boxed_slice());
        if i % 3 == 0 {
            tree.remove(&(i / 2));
        }
    }
    let shared = Rc::new(String::from("shared"));
    let clones: Vec<Rc<String>> = (0..1000).map(|_| Rc::clone(&shared)).collect();

    let total = Arc::new(Mutex::new(0u64));
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut handles = Vec::new();
    for t in 0..8u64 {
        let tx = tx.clone();
        let total = Arc::clone(&total);
        handles.push(std::thread::spawn(move || {
            for i in 0..2000u64 {
                let msg = vec![(t + i) as u8; 64 + (i % 200) as usize];
                *total.lock().unwrap() += msg.len() as u64;
                tx.send(msg).unwrap();
            }
        }));
    }
    drop(tx);
    let received: usize = rx.iter().map(|m| m.len()).sum();
    for h in handles {
        h.join().unwrap();
    }
    std::panic::set_hook(Box::new(|_| {}));
    let caught = std::panic::catch_unwind(|| {
        let _s = String::from("allocated before the panic");
        panic!("a panic that is caught");
    })
    .is_err();

    println!("vec_sum={}", v.iter().sum::<u64>());
    println!("words={}", words.len());
    println!("tree={} bytes={}", tree.len(), tree.values().map(|b| b.len()).sum::<usize>());
    println!("rc_count={}", Rc::strong_count(&clones[0]));
    println!("received={} total={}", received, *total.lock().unwrap());
    println!("caught_panic={caught}");
    println!("ok");
}
