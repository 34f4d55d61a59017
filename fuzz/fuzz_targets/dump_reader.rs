//! Fuzz target for the dump reader (`heapledger_format::parse`), which every CLI command runs on files that a
//! crashing program may have left half-written or garbled.
//!
//! Properties checked on every input:
//! * parsing never panics, whatever the bytes (libFuzzer also catches stack overflows, leaks and OOMs);
//! * a dump that parses has passed validation: every stack and allocator id it holds can be used as an index
//!   (the CLI indexes with them without further checks), and validating it again agrees;
//! * a dump that parses survives a round trip: serialized with serde and parsed again, it is the same dump
//!   (the tracer's open-ended `other` counters aside, whose floats serde_json may not round-trip exactly).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dump) = heapledger_format::parse(data) else {
        return;
    };
    assert!(dump.validate().is_ok());
    for b in &dump.blocks {
        let stack = usize::try_from(b.stack).expect("stack id fits usize");
        assert!(stack < dump.stacks.len());
        let family = usize::try_from(b.family).expect("family fits usize");
        assert!(family < dump.allocators.len());
        assert!(b.class <= 3);
    }
    for e in &dump.errors {
        for id in [Some(e.stack), e.alloc_stack, e.first_free_stack]
            .into_iter()
            .flatten()
        {
            assert!((id as usize) < dump.stacks.len());
        }
    }
    for m in &dump.modules {
        for s in &m.segments {
            assert!(m
                .base
                .checked_add(s.vaddr)
                .and_then(|a| a.checked_add(s.memsz))
                .is_some());
        }
    }
    let text = serde_json::to_vec(&dump).expect("a parsed dump serializes");
    let mut again = heapledger_format::parse(&text).expect("a serialized dump parses again");
    let mut original = dump;
    original.tracer.other.clear();
    again.tracer.other.clear();
    assert_eq!(again, original);
});
