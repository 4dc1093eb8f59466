//! CRC-32C of several short buffers at once, and framing code compiled
//! with the CPU's CRC instruction inlined.
//!
//! A TFRecord file of small records spends most of its framing time in the
//! data checksums, and one short checksum is bound by the latency of the
//! CRC32 instruction (3 cycles), not by its throughput (1 per cycle): each
//! step waits for the one before. Checksumming four records side by side
//! keeps four independent chains in flight, so the steps overlap.
//!
//! A call out of line per checksum costs about as much again (the results
//! go through memory, and the `crc32c` crate detects the CPU on every
//! call), so the framing loop itself is compiled for SSE 4.2 through
//! [`with_crc32c`], which hands it a [`Crc32c`] whose methods inline.
//!
//! This module's `unsafe` is calling the SSE 4.2 code after the CPU has
//! been seen to support it (the crate's other `unsafe` is TensorFlow's C
//! API); other CPUs take the `crc32c` crate's path.

/// The CRC-32C (not masked) of each of `data`, as `crc32c::crc32c` computes
/// it, with the four computations interleaved where the CPU allows.
pub(super) fn crc32c_4(data: [&[u8]; 4]) -> [u32; 4] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        #[allow(unsafe_code)]
        // SAFETY: `sse42::crc32c_4` needs SSE 4.2 only, and the line above
        // has just seen that this CPU has it.
        return unsafe { sse42::crc32c_4(data) };
    }
    data.map(crc32c::crc32c)
}

/// CRC-32C (not masked), one buffer or four side by side, as
/// `crc32c::crc32c` computes it: what [`with_crc32c`] hands its code.
pub(super) trait Crc32c: Copy {
    /// The checksum of `data`.
    fn one(self, data: &[u8]) -> u32;
    /// The checksums of four buffers, computed side by side where the CPU
    /// allows.
    fn four(self, data: [&[u8]; 4]) -> [u32; 4];
}

/// Code to run with the best [`Crc32c`] of this CPU ([`with_crc32c`]).
pub(super) trait WithCrc32c {
    /// What the code returns.
    type Output;
    /// Runs the code with `crc`. Mark it `#[inline(always)]`: compiled into
    /// [`with_crc32c`]'s SSE 4.2 function, its checksums inline.
    fn run<C: Crc32c>(self, crc: C) -> Self::Output;
}

/// Runs `code` with the CRC instruction's [`Crc32c`] compiled into it on a
/// CPU that has SSE 4.2, else with the `crc32c` crate's.
pub(super) fn with_crc32c<W: WithCrc32c>(code: W) -> W::Output {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        #[allow(unsafe_code)]
        // SAFETY: `sse42::run` needs SSE 4.2 only, and the line above has
        // just seen that this CPU has it.
        return unsafe { sse42::run(code) };
    }
    code.run(Portable)
}

/// The `crc32c` crate's checksums, on any CPU.
#[derive(Debug, Clone, Copy)]
pub(super) struct Portable;

impl Crc32c for Portable {
    fn one(self, data: &[u8]) -> u32 {
        crc32c::crc32c(data)
    }

    fn four(self, data: [&[u8]; 4]) -> [u32; 4] {
        crc32c_4(data)
    }
}

#[cfg(target_arch = "x86_64")]
mod sse42 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};

    use super::{Crc32c, WithCrc32c};

    /// The CRC instruction's checksums: made only by [`run`], on a CPU that
    /// has SSE 4.2, which is what makes calling its code sound.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Sse42(());

    impl Crc32c for Sse42 {
        #[inline(always)]
        fn one(self, data: &[u8]) -> u32 {
            #[allow(unsafe_code)]
            // SAFETY: an `Sse42` exists only inside `run`, which runs on a
            // CPU that has SSE 4.2.
            unsafe {
                crc32c_inline(data)
            }
        }

        #[inline(always)]
        fn four(self, data: [&[u8]; 4]) -> [u32; 4] {
            #[allow(unsafe_code)]
            // SAFETY: as in `one`.
            unsafe {
                crc32c_4_inline(data)
            }
        }
    }

    /// `code` compiled for SSE 4.2, with an [`Sse42`].
    ///
    /// # Safety
    /// The CPU must have SSE 4.2.
    #[allow(unsafe_code)]
    #[target_feature(enable = "sse4.2")]
    pub(super) unsafe fn run<W: WithCrc32c>(code: W) -> W::Output {
        code.run(Sse42(()))
    }

    /// `crc32c_4` for the crate's other callers, out of line.
    #[target_feature(enable = "sse4.2")]
    pub(super) fn crc32c_4(data: [&[u8]; 4]) -> [u32; 4] {
        #[allow(unsafe_code)]
        // SAFETY: this function runs only on a CPU that has SSE 4.2.
        unsafe {
            crc32c_4_inline(data)
        }
    }

    /// One CRC-32C chain: whole words, then the last bytes one by one.
    ///
    /// This and [`crc32c_4_inline`] are compiled into their callers, which
    /// must be compiled for SSE 4.2 for the instructions to inline (a
    /// `#[target_feature]` function cannot be `#[inline(always)]`).
    ///
    /// # Safety
    /// The CPU must have SSE 4.2.
    #[allow(unsafe_code)]
    #[inline(always)]
    unsafe fn crc32c_inline(data: &[u8]) -> u32 {
        let words = data.chunks_exact(8);
        let tail = words.remainder();
        let mut crc = u64::from(u32::MAX);
        for w in words {
            // SAFETY (this and every intrinsic below): the caller's promise.
            crc = unsafe { _mm_crc32_u64(crc, word(w)) };
        }
        let mut crc = crc as u32;
        for &b in tail {
            crc = unsafe { _mm_crc32_u8(crc, b) };
        }
        !crc
    }

    /// Four CRC-32C chains side by side. Each buffer of `n` bytes is taken
    /// as a head of `h` bytes (1 to 8, with `n - h` a multiple of 8) and
    /// whole words after it, so that no buffer needs a byte-by-byte start
    /// or end, and their branches: the head goes in as one word, after the
    /// register state that 8 − `h` zero bytes turn into the initial one
    /// ([`START`]). Buffers shorter than a word take one chain each.
    ///
    /// # Safety
    /// The CPU must have SSE 4.2.
    #[allow(unsafe_code)]
    #[inline(always)]
    unsafe fn crc32c_4_inline(data: [&[u8]; 4]) -> [u32; 4] {
        // Closures and `array::map` would be compiled without SSE 4.2 and
        // called out of line: plain loops only.
        let mut out = [0; 4];
        if data.iter().any(|d| d.len() < 8) {
            for k in 0..4 {
                // SAFETY: the caller's promise.
                out[k] = unsafe { crc32c_inline(data[k]) };
            }
            return out;
        }
        let mut crc = [0u64; 4];
        let mut rest: [&[u8]; 4] = [&[]; 4];
        for k in 0..4 {
            let head = (data[k].len() - 1) % 8 + 1;
            let first = u64::from_le_bytes(*data[k].first_chunk::<8>().expect("8 bytes or more"));
            // SAFETY (this and every intrinsic below): the caller's promise.
            crc[k] = unsafe { _mm_crc32_u64(u64::from(START[head]), first << (64 - 8 * head)) };
            rest[k] = &data[k][head..];
        }
        let words = rest[0]
            .len()
            .min(rest[1].len())
            .min(rest[2].len())
            .min(rest[3].len())
            / 8;
        let [a, b, c, d] = rest;
        let (a, b, c, d) = (
            &a[..words * 8],
            &b[..words * 8],
            &c[..words * 8],
            &d[..words * 8],
        );
        // Indices, not zipped iterators: the zips are not always inlined.
        for i in (0..words * 8).step_by(8) {
            unsafe {
                crc[0] = _mm_crc32_u64(crc[0], word(&a[i..i + 8]));
                crc[1] = _mm_crc32_u64(crc[1], word(&b[i..i + 8]));
                crc[2] = _mm_crc32_u64(crc[2], word(&c[i..i + 8]));
                crc[3] = _mm_crc32_u64(crc[3], word(&d[i..i + 8]));
            }
        }
        for k in 0..4 {
            for w in rest[k][words * 8..].chunks_exact(8) {
                crc[k] = unsafe { _mm_crc32_u64(crc[k], word(w)) };
            }
            out[k] = !(crc[k] as u32);
        }
        out
    }

    #[inline(always)]
    fn word(bytes: &[u8]) -> u64 {
        u64::from_le_bytes(bytes.try_into().expect("a chunk of 8 bytes"))
    }

    /// `START[h]`: the register state that `8 - h` zero bytes take to the
    /// initial state of CRC-32C (all ones), for `h` from 1 to 8.
    const START: [u32; 9] = {
        let mut start = [u32::MAX; 9];
        let mut h = 0;
        while h < 8 {
            let mut state = u32::MAX;
            let mut zeros = 8 - h;
            while zeros > 0 {
                state = unstep(state);
                zeros -= 1;
            }
            start[h] = state;
            h += 1;
        }
        start
    };

    /// The reflected CRC-32C table entry of byte `b`.
    const fn table(b: u32) -> u32 {
        let mut c = b;
        let mut i = 0;
        while i < 8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            i += 1;
        }
        c
    }

    /// The state before one zero byte took the register to `state`. A zero
    /// byte takes `s` to `(s >> 8) ^ table(s & 0xff)`, and the top bytes of
    /// the 256 table entries differ from each other, so the top byte of
    /// `state` names the low byte of `s`.
    const fn unstep(state: u32) -> u32 {
        let mut b = 0;
        while b < 256 {
            let t = table(b);
            if t >> 24 == state >> 24 {
                return ((state ^ t) << 8) | b;
            }
            b += 1;
        }
        panic!("the CRC-32C table's top bytes are a permutation")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length from 0 to 80 in every lane, at every alignment, against
    /// the `crc32c` crate.
    #[test]
    fn interleaved_checksums_equal_the_crc32c_crate() {
        let bytes: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..=80 {
            for skew in 0..8 {
                let lanes = [
                    &bytes[skew..skew + len],
                    &bytes[1..1 + (len * 3 / 4)],
                    &bytes[skew + 3..skew + 3 + len],
                    &bytes[7..7 + len.saturating_sub(skew)],
                ];
                let want = lanes.map(crc32c::crc32c);
                assert_eq!(crc32c_4(lanes), want, "len {len}, skew {skew}");
            }
        }
        // The CRC-32C check value.
        assert_eq!(crc32c_4([b"123456789"; 4]), [0xE306_9283; 4]);
    }

    /// Checks `one` and `four` of the `Crc32c` it is run with against the
    /// `crc32c` crate, on every length from 0 to 80 at every alignment.
    struct Check<'a>(&'a [u8]);

    impl WithCrc32c for Check<'_> {
        type Output = usize;

        fn run<C: Crc32c>(self, crc: C) -> usize {
            let mut checked = 0;
            for len in 0..=80 {
                for skew in 0..8 {
                    let data = &self.0[skew..skew + len];
                    assert_eq!(
                        crc.one(data),
                        crc32c::crc32c(data),
                        "len {len}, skew {skew}"
                    );
                    let lanes = [data, &self.0[3..3 + len / 2], &self.0[..len], data];
                    assert_eq!(crc.four(lanes), lanes.map(crc32c::crc32c), "len {len}");
                    checked += 1;
                }
            }
            checked
        }
    }

    #[test]
    fn the_dispatched_and_the_portable_checksums_equal_the_crc32c_crate() {
        let bytes: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        assert_eq!(with_crc32c(Check(&bytes)), 81 * 8);
        assert_eq!(Check(&bytes).run(Portable), 81 * 8);
    }
}
