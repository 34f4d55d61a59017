//! Process life: start-up, the dump at exit and `_exit`, and fork.

use crate::dump::{self, Reason};
use crate::real;
use crate::sys;
use crate::thread;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The process the tracer's state belongs to (updated in a fork child; a vfork child sees a different pid).
pub static PID: AtomicU32 = AtomicU32::new(0);
/// The end-of-process dump was written.
static FINAL_DONE: AtomicBool = AtomicBool::new(false);

/// Runs once the real functions are resolved (from whichever hook or constructor came first).
pub fn on_ready() {
    PID.store(sys::getpid(), Ordering::Relaxed);
    dump::START_NS.store(sys::realtime_ns(), Ordering::Relaxed);
    sys::remember_stderr();
    crate::heap::init_reserve();
    crate::intern::init();
    crate::stack::init_self_range();
}

/// Runs `f` as the tracer's own work, so anything libc allocates for it is internal.
pub fn as_tracer<R>(f: impl FnOnce() -> R) -> R {
    thread::with_busy(thread::BUSY_TRACER, f)
}

extern "C" fn constructor() {
    if !real::ready() && !real::ensure_init() {
        return;
    }
    as_tracer(|| {
        crate::modules::refresh();
        // SAFETY: registering plain extern "C" handlers.
        unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
        // A panic inside the tracer is contained by the hooks; keep its message off the program's stderr.
        std::panic::set_hook(std::boxed::Box::new(|_| {}));
        crate::snapshot::start();
        if crate::config::CRASH.load(Ordering::Relaxed) != 0 {
            crate::crash::install();
        }
        crate::platform::watch::start();
    });
}

extern "C" fn destructor() {
    final_dump(Reason::Exit);
}

#[inline(always)]
fn final_dump(reason: Reason) {
    crate::reach::capture_entry();
    if !real::ready() || sys::getpid() != PID.load(Ordering::Relaxed) {
        // Not initialised, or a vfork child borrowing its parent's memory: not ours to write.
        return;
    }
    if FINAL_DONE.swap(true, Ordering::AcqRel) {
        return;
    }
    as_tracer(|| {
        let _ = std::panic::catch_unwind(|| dump::write(reason, "", false));
    });
}

/// Called by the `_exit`/`_Exit` hooks.
pub fn before_underscore_exit() {
    final_dump(Reason::UnderscoreExit);
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = constructor;

#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = destructor;

// ---- fork ---------------------------------------------------------------------------------------------------
// Every tracer lock is held across fork(), in one fixed order, so the child never inherits a lock owned by a
// thread that does not exist there.

extern "C" fn fork_prepare() {
    dump::lock_for_fork().raw_lock();
    crate::modules::registry().raw_lock();
    crate::errors::lock_for_fork().raw_lock();
    for i in 0..crate::table::SHARDS {
        crate::table::shard(i).raw_lock();
    }
    crate::heap::lock_for_fork().raw_lock();
}

fn unlock_all() {
    // SAFETY: fork_prepare took every one of these locks in this thread (or, in the child, we are alone).
    unsafe {
        crate::heap::lock_for_fork().force_unlock();
        for i in 0..crate::table::SHARDS {
            crate::table::shard(i).force_unlock();
        }
        crate::errors::lock_for_fork().force_unlock();
        crate::modules::registry().force_unlock();
        dump::lock_for_fork().force_unlock();
    }
}

extern "C" fn fork_parent() {
    unlock_all();
}

extern "C" fn fork_child() {
    unlock_all();
    PID.store(sys::getpid(), Ordering::Relaxed);
    FINAL_DONE.store(false, Ordering::Relaxed);
    dump::SNAPSHOT.store(0, Ordering::Relaxed);
    dump::FINAL_WRITTEN.store(false, Ordering::Relaxed);
    // SAFETY: the child's only thread, its own state.
    thread::after_fork_child(unsafe { &mut *thread::current() });
    crate::snapshot::after_fork_child();
    crate::platform::watch::after_fork_child();
}
