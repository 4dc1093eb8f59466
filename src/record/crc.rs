//! CRC-32C of several short buffers at once.
//!
//! A TFRecord file of small records spends most of its framing time in the
//! data checksums, and one short checksum is bound by the latency of the
//! CRC32 instruction (3 cycles), not by its throughput (1 per cycle): each
//! step waits for the one before. Checksumming four records side by side
//! keeps four independent chains in flight, so the steps overlap.
//!
//! This module holds the crate's only `unsafe`: calling the SSE 4.2 code
//! after the CPU has been seen to support it. Everything else is safe Rust,
//! and other CPUs take the `crc32c` crate's path.

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

#[cfg(target_arch = "x86_64")]
mod sse42 {
    use std::arch::x86_64::_mm_crc32_u64;

    /// Four CRC-32C chains side by side. Each buffer of `n` bytes is taken
    /// as a head of `h` bytes (1 to 8, with `n - h` a multiple of 8) and
    /// whole words after it, so that no buffer needs a byte-by-byte start
    /// or end, and their branches: the head goes in as one word, after the
    /// register state that 8 − `h` zero bytes turn into the initial one
    /// ([`START`]). Buffers shorter than a word take the `crc32c` crate.
    #[target_feature(enable = "sse4.2")]
    pub(super) fn crc32c_4(data: [&[u8]; 4]) -> [u32; 4] {
        // Closures and `array::map` would be compiled without SSE 4.2 and
        // called out of line: plain loops only.
        let mut out = [0; 4];
        if data.iter().any(|d| d.len() < 8) {
            for k in 0..4 {
                out[k] = crc32c::crc32c(data[k]);
            }
            return out;
        }
        let mut crc = [0u64; 4];
        let mut rest: [&[u8]; 4] = [&[]; 4];
        for k in 0..4 {
            let head = (data[k].len() - 1) % 8 + 1;
            let first = u64::from_le_bytes(*data[k].first_chunk::<8>().expect("8 bytes or more"));
            crc[k] = _mm_crc32_u64(u64::from(START[head]), first << (64 - 8 * head));
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
        let lanes = a.chunks_exact(8).zip(b.chunks_exact(8));
        let lanes = lanes.zip(c.chunks_exact(8)).zip(d.chunks_exact(8));
        for (((a, b), c), d) in lanes {
            crc[0] = _mm_crc32_u64(crc[0], word(a));
            crc[1] = _mm_crc32_u64(crc[1], word(b));
            crc[2] = _mm_crc32_u64(crc[2], word(c));
            crc[3] = _mm_crc32_u64(crc[3], word(d));
        }
        for k in 0..4 {
            for w in rest[k][words * 8..].chunks_exact(8) {
                crc[k] = _mm_crc32_u64(crc[k], word(w));
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
}
