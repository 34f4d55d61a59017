//! The in-memory shape of a dump, field for field as in `docs/dump-format.md`.
//!
//! Unknown keys are ignored so that additions that do not change the meaning of existing keys (which the format
//! allows without a version bump) do not break old readers.

use serde::{Deserialize, Serialize};

/// One dump file. Obtain it through [`crate::load`], which validates ids; a `Dump` built by hand (tests) should
/// be passed through [`Dump::validate`] before ids are used as indexes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Dump {
    /// Always [`crate::FORMAT`].
    pub format: String,
    /// Always [`crate::VERSION`] for dumps this crate accepts.
    pub version: u64,
    /// Why the dump was written: one of [`crate::reason::ALL`].
    pub reason: String,
    /// Extra detail, e.g. `"SIGSEGV"` for a crash.
    #[serde(default)]
    pub detail: String,
    /// `linux-x86_64`, `windows-x86_64`, ...
    pub platform: String,
    /// Process id.
    pub pid: u64,
    /// Parent process id.
    pub ppid: u64,
    /// Resolved path of the executable.
    pub exe: String,
    /// Command line, `argv[0]` first.
    pub cmdline: Vec<String>,
    /// Snapshot number within the process (`%n`).
    pub snapshot: u64,
    /// `CLOCK_REALTIME` when written.
    pub time_ns: u64,
    /// `CLOCK_REALTIME` when the tracer initialised.
    pub start_time_ns: u64,
    /// `CLOCK_MONOTONIC` when written.
    pub monotonic_ns: u64,
    /// Maximum frames recorded per stack.
    pub depth: u64,
    /// 0: every allocation recorded; N: Poisson sampling with one sample per N bytes on average.
    pub sample_bytes: u64,
    /// Exact allocation counters.
    pub totals: Totals,
    /// Live blocks and bytes when the dump was written.
    pub live: Live,
    /// Exact error counts (the `errors` list may be capped).
    pub error_counts: ErrorCounts,
    /// The tracer's own health counters.
    pub tracer: Tracer,
    /// Allocator family names; a block's `family` indexes this list.
    pub allocators: Vec<String>,
    /// Modules mapped in the process.
    pub modules: Vec<Module>,
    /// Interned stacks: return addresses, innermost first. `stacks[0]` is the empty stack.
    pub stacks: Vec<Vec<u64>>,
    /// Every live block.
    pub blocks: Vec<Block>,
    /// Bad frees (at most 1000 kept).
    pub errors: Vec<ErrorRecord>,
    /// Where the process crashed (crash dumps only).
    #[serde(default)]
    pub crash: Option<Crash>,
    /// `true` when the writer finished; a missing key means the file was cut short.
    #[serde(default)]
    pub complete: bool,
}

/// The context of a crash dump: the fatal signal and the crashing thread's stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Crash {
    /// Signal number (11 = SIGSEGV, 6 = SIGABRT, ...).
    pub signal: u64,
    /// `si_code`: > 0 raised by the CPU (e.g. 1 = SEGV_MAPERR), <= 0 sent by a process (kill, raise, abort).
    pub code: i64,
    /// `si_addr`: the faulting address for SIGSEGV/SIGBUS, the faulting instruction for SIGILL/SIGFPE.
    pub addr: u64,
    /// Thread that crashed.
    pub tid: u64,
    /// Stack id of the crashing thread, innermost first (the signal trampoline, then the faulting function).
    pub stack: u64,
}

/// Allocation counters, counted the way Valgrind's "total heap usage" does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Totals {
    /// Allocation calls (including `malloc(0)` and growing `realloc`s).
    pub allocations: u64,
    /// Successful frees (rejected frees are not counted).
    pub frees: u64,
    /// Bytes requested by all allocations.
    pub bytes_allocated: u64,
    /// Bytes released by all frees.
    pub bytes_freed: u64,
}

/// Live heap at dump time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Live {
    /// Number of live blocks.
    pub blocks: u64,
    /// Sum of their sizes.
    pub bytes: u64,
}

/// Exact count of each error kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ErrorCounts {
    /// `double_free` errors.
    pub double_free: u64,
    /// `invalid_free` errors.
    pub invalid_free: u64,
    /// `mismatched_free` errors.
    pub mismatched_free: u64,
    /// `cross_heap_free` errors.
    pub cross_heap_free: u64,
}

impl ErrorCounts {
    /// Sum of all kinds.
    pub fn total(&self) -> u64 {
        self.double_free
            .saturating_add(self.invalid_free)
            .saturating_add(self.mismatched_free)
            .saturating_add(self.cross_heap_free)
    }

    /// Count for one kind.
    pub fn get(&self, kind: ErrorKind) -> u64 {
        match kind {
            ErrorKind::DoubleFree => self.double_free,
            ErrorKind::InvalidFree => self.invalid_free,
            ErrorKind::MismatchedFree => self.mismatched_free,
            ErrorKind::CrossHeapFree => self.cross_heap_free,
        }
    }
}

/// The tracer's own health: losses are counted, never silent.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Tracer {
    /// Allocations not recorded (tracer out of memory).
    pub lost_blocks: u64,
    /// Stacks not interned (recorded with the empty stack 0).
    pub lost_stacks: u64,
    /// Errors counted but not kept in `errors`.
    pub lost_errors: u64,
    /// Stacks cut at `depth`.
    pub truncated_stacks: u64,
    /// The tracer's own mmap'd memory.
    pub memory_bytes: u64,
    /// Counters added by later writers; kept so reports can copy the object whole.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// A module (executable or shared object) mapped in the traced process.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Module {
    /// Path as the dynamic loader saw it.
    pub path: String,
    /// Hex GNU build-id, or `""` when the module has none.
    #[serde(default)]
    pub build_id: String,
    /// Load bias (`dlpi_addr`): runtime address = `base + vaddr`.
    pub base: u64,
    /// `PT_LOAD` segments.
    pub segments: Vec<Segment>,
    /// `false`: `dlclose`d before this dump (its address range may since have been reused).
    pub loaded: bool,
    /// For an unloaded module: the number of stacks interned when it was found gone. Stacks with a lower id
    /// were interned while it was mapped, so their addresses in its range are its code, even if another module
    /// has since been mapped there (the two were never mapped at once). Absent in older dumps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacks_to: Option<u64>,
}

/// A `PT_LOAD` segment, serialized as `[vaddr, memsz, flags]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "U64Array<3>", into = "U64Array<3>")]
pub struct Segment {
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_memsz`.
    pub memsz: u64,
    /// `p_flags` (see [`crate::segment_flags`]).
    pub flags: u64,
}

impl From<U64Array<3>> for Segment {
    fn from(U64Array([vaddr, memsz, flags]): U64Array<3>) -> Self {
        Segment {
            vaddr,
            memsz,
            flags,
        }
    }
}

impl From<Segment> for U64Array<3> {
    fn from(s: Segment) -> Self {
        U64Array([s.vaddr, s.memsz, s.flags])
    }
}

/// A live block, serialized as `[addr, size, stack, family, tid, seq, class]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "U64Array<7>", into = "U64Array<7>")]
pub struct Block {
    /// Address returned to the program.
    pub addr: u64,
    /// Requested size.
    pub size: u64,
    /// Index into [`Dump::stacks`] (validated by the loader).
    pub stack: u64,
    /// Index into [`Dump::allocators`] (validated by the loader).
    pub family: u64,
    /// Kernel thread id of the allocating thread.
    pub tid: u64,
    /// Per-process allocation sequence number.
    pub seq: u64,
    /// Reachability class (see [`crate::class`]; validated to be at most 3).
    pub class: u64,
}

impl From<U64Array<7>> for Block {
    fn from(U64Array([addr, size, stack, family, tid, seq, class]): U64Array<7>) -> Self {
        Block {
            addr,
            size,
            stack,
            family,
            tid,
            seq,
            class,
        }
    }
}

impl From<Block> for U64Array<7> {
    fn from(b: Block) -> Self {
        U64Array([b.addr, b.size, b.stack, b.family, b.tid, b.seq, b.class])
    }
}

/// Wire form of [`Block`] and [`Segment`]: a JSON array of exactly `N` unsigned integers.
///
/// Written by hand rather than derived for a tuple because serde_json reports surplus elements of a tuple as
/// "trailing characters", a syntax error that would be indistinguishable from a file cut short; here both a
/// short and a long array are a data error naming the expected length.
#[derive(Clone, Copy)]
struct U64Array<const N: usize>([u64; N]);

impl<const N: usize> Serialize for U64Array<N> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.as_slice().serialize(serializer)
    }
}

impl<'de, const N: usize> Deserialize<'de> for U64Array<N> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<const N: usize>;

        impl<'de, const N: usize> serde::de::Visitor<'de> for Visitor<N> {
            type Value = U64Array<N>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "an array of {N} unsigned integers")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = [0u64; N];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(N + 1, &self));
                }
                Ok(U64Array(out))
            }
        }

        deserializer.deserialize_seq(Visitor::<N>)
    }
}

/// Kind of a bad free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// `double_free`
    DoubleFree,
    /// `invalid_free`
    InvalidFree,
    /// `mismatched_free`
    MismatchedFree,
    /// `cross_heap_free`
    CrossHeapFree,
}

impl ErrorKind {
    /// All kinds, in the order of [`crate::ERROR_KINDS`].
    pub const ALL: [ErrorKind; 4] = [
        ErrorKind::DoubleFree,
        ErrorKind::InvalidFree,
        ErrorKind::MismatchedFree,
        ErrorKind::CrossHeapFree,
    ];

    /// The wire name (`"double_free"`, ...).
    pub fn name(self) -> &'static str {
        crate::ERROR_KINDS[self as usize]
    }
}

/// One bad free.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ErrorRecord {
    /// What went wrong.
    pub kind: ErrorKind,
    /// The pointer passed to the free function.
    pub addr: u64,
    /// Size of the block concerned (0 when unknown).
    pub size: u64,
    /// Family the block was allocated with.
    pub allocator: String,
    /// Function that freed it (`free`, `realloc`, `delete`, `delete[]`, ...).
    pub freed_with: String,
    /// Kernel thread id of the freeing thread.
    pub tid: u64,
    /// For `invalid_free`: one of [`crate::invalid_free::ALL`].
    #[serde(default)]
    pub detail: String,
    /// Stack id of the bad free.
    pub stack: u64,
    /// Stack id of the allocation, when known.
    pub alloc_stack: Option<u64>,
    /// Stack id of the first free (double frees), when known.
    pub first_free_stack: Option<u64>,
}

impl Dump {
    /// Returns the stack with id `id`, or an empty slice if the id is out of range (only possible for a dump
    /// that was not validated).
    pub fn stack(&self, id: u64) -> &[u64] {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.stacks.get(i))
            .map_or(&[], Vec::as_slice)
    }

    /// Name of allocator family `family`, or `"?"` if out of range (only possible for an unvalidated dump).
    pub fn allocator(&self, family: u64) -> &str {
        usize::try_from(family)
            .ok()
            .and_then(|i| self.allocators.get(i))
            .map_or("?", String::as_str)
    }
}
