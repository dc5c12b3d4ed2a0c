//! Chunk readers over mutated bodies: a valid Cobblestone body is built from the input, then
//! mutated (flips, truncation, appended bytes, copied ranges). Whatever the mutation:
//! readers never panic; a successful read returns exactly the original message (forgery is
//! infeasible, so success means the mutation changed nothing); a failing streaming read releases
//! only whole chunks of the original before failing, and keeps failing.
#![no_main]

use std::io::{Cursor, Read};

use coffre_seal::chunked::{self, CHUNK_SIZE, DecryptingReader, RandomAccessReader};
use coffre_seal::{RandomSource, Workers};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [0x42; 32];

#[derive(Debug, Arbitrary)]
enum Op {
    Flip { at: u32, mask: u8 },
    Truncate { to: u32 },
    Append { bytes: Vec<u8> },
    Copy { from: u32, to: u32, len: u16 },
}

#[derive(Debug, Arbitrary)]
struct Input {
    len: u16,
    fill: u8,
    declare: bool,
    raw_body: bool,
    body: Vec<u8>,
    ops: Vec<Op>,
}

struct Salt;

impl RandomSource for Salt {
    fn fill(&mut self, dest: &mut [u8]) -> coffre_seal::Result<()> {
        dest.fill(7);
        Ok(())
    }
}

fn mutate(body: &mut Vec<u8>, ops: &[Op]) {
    for op in ops.iter().take(8) {
        let n = body.len().max(1) as u32;
        match op {
            Op::Flip { at, mask } => {
                if !body.is_empty() {
                    body[(at % n) as usize] ^= mask;
                }
            }
            Op::Truncate { to } => body.truncate((to % n) as usize),
            Op::Append { bytes } => body.extend_from_slice(&bytes[..bytes.len().min(64)]),
            Op::Copy { from, to, len } => {
                let (from, to) = ((from % n) as usize, (to % n) as usize);
                let len = usize::from(*len).min(body.len() - from).min(body.len() - to);
                body.copy_within(from..from + len, to);
            }
        }
    }
}

fuzz_target!(|input: Input| {
    // Messages up to ~4.4 chunks: enough to cross chunk boundaries and exercise the final chunk.
    let len = usize::from(input.len) % (4 * CHUNK_SIZE + 7000);
    let plain: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ input.fill).collect();
    let workers = Workers::sequential();
    let mut body = if input.raw_body {
        input.body.clone()
    } else {
        chunked::encrypt(&KEY, b"ctx", &plain, &workers, &mut Salt).expect("encrypt")
    };
    mutate(&mut body, &input.ops);
    let declared = input.declare.then_some(len as u64);
    let original: &[u8] = if input.raw_body { &[] } else { &plain };

    let whole = chunked::decrypt(&KEY, b"ctx", &body, &workers);
    if let Ok(out) = &whole {
        assert!(!input.raw_body, "a body of arbitrary bytes was accepted");
        assert_eq!(&out[..], original);
    }

    if let Ok(mut reader) = DecryptingReader::new(&body[..], &KEY, b"ctx", declared, Workers::sequential()) {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 5000];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => {
                    assert_eq!(&out[..], original, "streaming read succeeded with other data");
                    break;
                }
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => {
                    assert!(out.len() % CHUNK_SIZE == 0 && original.starts_with(&out));
                    assert!(reader.read(&mut buf).is_err(), "reader recovered after an error");
                    break;
                }
            }
        }
    }

    if let Ok(mut ra) = RandomAccessReader::new(Cursor::new(&body), 0, &KEY, b"ctx", declared, Workers::sequential()) {
        assert_eq!(ra.len(), original.len() as u64, "length authenticated to a wrong value");
        let mut all = vec![0u8; original.len()];
        if ra.read_at(0, &mut all).is_ok() {
            assert_eq!(&all[..], original);
        }
    }
});
