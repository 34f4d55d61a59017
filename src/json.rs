//! A JSON writer that never allocates: a fixed buffer flushed with write(2).
//!
//! The same code writes normal dumps and crash dumps from a signal handler, where neither malloc nor stdio may
//! be used; serde_json would need both. The reader side (the CLI) uses serde_json.

use core::ffi::c_int;

const BUF: usize = 1 << 16;

/// A buffered writer to a file descriptor. Errors are sticky: after one failed write, `ok()` stays false.
pub struct Out {
    fd: c_int,
    len: usize,
    ok: bool,
    buf: [u8; BUF],
}

impl Out {
    /// An empty writer (the buffer lives in static storage; see `dump.rs`).
    pub const fn new() -> Self {
        Out {
            fd: -1,
            len: 0,
            ok: true,
            buf: [0; BUF],
        }
    }

    /// Starts writing to `fd`.
    pub fn start(&mut self, fd: c_int) {
        self.fd = fd;
        self.len = 0;
        self.ok = true;
    }

    /// Raw bytes.
    #[inline]
    pub fn raw(&mut self, b: &[u8]) {
        if self.len + b.len() > BUF {
            self.flush();
            if b.len() > BUF {
                self.ok &= crate::sys::write_all(self.fd, b);
                return;
            }
        }
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
    }

    /// A decimal number, its digits written straight into the buffer (see `digits_before` for why).
    #[inline]
    pub fn num(&mut self, v: u64) {
        if self.len + 20 > BUF {
            self.flush();
        }
        // The digits end at tmp[20]; then 20 bytes are copied from where they start: a fixed-size copy, and the
        // bytes after the number are overwritten by whatever comes next.
        let mut tmp = [0u8; 40];
        let i = digits_before(v, &mut tmp, 20);
        if let Some(dst) = self.buf.get_mut(self.len..self.len + 20) {
            dst.copy_from_slice(&tmp[i..i + 20]);
            self.len += 20 - i;
        }
    }

    /// One byte.
    #[inline]
    pub fn byte(&mut self, c: u8) {
        if self.len == BUF {
            self.flush();
        }
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = c;
            self.len += 1;
        }
    }

    /// A JSON string. Invalid UTF-8 bytes are written as `\u00XX` so the output is always valid JSON.
    pub fn str(&mut self, s: &[u8]) {
        self.raw(b"\"");
        let valid = core::str::from_utf8(s).is_ok();
        for &c in s {
            match c {
                b'"' => self.raw(b"\\\""),
                b'\\' => self.raw(b"\\\\"),
                b'\n' => self.raw(b"\\n"),
                c if c < 0x20 || (c >= 0x80 && !valid) => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    self.raw(&[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[(c >> 4) as usize],
                        HEX[(c & 15) as usize],
                    ]);
                }
                c => self.raw(&[c]),
            }
        }
        self.raw(b"\"");
    }

    /// `"key":` — keys are trusted literals.
    pub fn key(&mut self, k: &str) {
        self.raw(b"\"");
        self.raw(k.as_bytes());
        self.raw(b"\":");
    }

    /// `"key":{"k1":v1,...},` followed by a newline: a flat object of numbers.
    pub fn object(&mut self, key: &str, fields: &[(&str, u64)]) {
        self.key(key);
        self.raw(b"{");
        for (i, (k, v)) in fields.iter().enumerate() {
            if i > 0 {
                self.raw(b",");
            }
            self.key(k);
            self.num(*v);
        }
        self.raw(b"},\n");
    }

    /// Lowercase hex digits, as a JSON string.
    pub fn hex(&mut self, b: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.raw(b"\"");
        for &c in b {
            self.raw(&[HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]);
        }
        self.raw(b"\"");
    }

    /// Writes out the buffer.
    pub fn flush(&mut self) {
        if self.len > 0 {
            self.ok &= crate::sys::write_all(self.fd, &self.buf[..self.len]);
            self.len = 0;
        }
    }

    /// True while every write succeeded.
    pub fn ok(&self) -> bool {
        self.ok
    }
}

/// Formats `v` in decimal into `buf`, returning the digits (file names, messages; no allocation).
pub fn fmt_u64(v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let start = digits_before(v, buf, 20);
    &buf[start..]
}

/// Writes `v` in decimal so that its last digit lands at `buf[end - 1]`, and returns where its first digit is.
/// Two digits at a time from a table, in eight-digit chunks of 32-bit arithmetic: a dump's stack table is
/// millions of return addresses (a digit at a time, plus a copy per number, was ~45 % of the instructions of a
/// program with 50k distinct stacks). `end` must leave room for 20 digits (`u64::MAX`).
#[inline(always)]
fn digits_before(mut v: u64, buf: &mut [u8], end: usize) -> usize {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";
    let mut i = end;
    let mut pair = |i: usize, r: u32| {
        let r = r as usize * 2;
        buf[i] = PAIRS[r];
        buf[i + 1] = PAIRS[r + 1];
    };
    while v >= 100_000_000 {
        let mut c = (v % 100_000_000) as u32;
        v /= 100_000_000;
        for _ in 0..4 {
            i -= 2;
            pair(i, c % 100);
            c /= 100;
        }
    }
    let mut c = v as u32;
    while c >= 100 {
        i -= 2;
        pair(i, c % 100);
        c /= 100;
    }
    if c >= 10 {
        i -= 2;
        pair(i, c);
    } else {
        i -= 1;
        buf[i] = b'0' + c as u8;
    }
    i
}
