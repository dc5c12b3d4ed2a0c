//! Whole sealed objects, mutated: built for a fixed recipient from the input, then mutated
//! (flips, truncation, appends). Opening never panics; a successful open returns exactly the
//! original; a failing streaming open releases only whole authenticated chunks.
#![no_main]

use std::io::{Cursor, Read, Write};

use coffre_seal::chunked::CHUNK_SIZE;
use coffre_seal::{HeaderFields, RecipientSecretKey, SystemRandom, Workers};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    len: u16,
    declare: bool,
    tenant: u8,
    flips: Vec<(u32, u8)>,
    truncate: Option<u32>,
    append: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let id = RecipientSecretKey::derive_for_tests(&[7u8; 48]).expect("key");
    let len = usize::from(input.len) % (2 * CHUNK_SIZE + 100);
    let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let fields = HeaderFields {
        tenant: format!("t{}", input.tenant),
        dataset: "d".into(),
        content_type: "application/jsonl".into(),
        plaintext_len: input.declare.then_some(len as u64),
    };
    let mut sealer =
        coffre_seal::seal(Vec::new(), &[id.public().clone()], &fields, Workers::sequential(), &mut SystemRandom).expect("seal");
    sealer.write_all(&plain).expect("write");
    let mut sealed = sealer.finish().expect("finish").0;
    let n = sealed.len() as u32;
    for (at, mask) in input.flips.iter().take(4) {
        sealed[(at % n) as usize] ^= mask;
    }
    if let Some(to) = input.truncate {
        sealed.truncate((to % n) as usize);
    }
    sealed.extend_from_slice(&input.append[..input.append.len().min(32)]);

    if let Ok((_, mut reader)) = coffre_seal::open(&sealed[..], &id, Workers::sequential()) {
        let mut out = Vec::new();
        match reader.read_to_end(&mut out) {
            Ok(_) => assert_eq!(out, plain),
            Err(_) => assert!(out.len() % CHUNK_SIZE == 0 && plain.starts_with(&out)),
        }
    }
    if let Ok((_, mut ra)) = coffre_seal::open_random_access(Cursor::new(&sealed), &id, Workers::sequential()) {
        assert_eq!(ra.len(), plain.len() as u64);
        let mut all = vec![0u8; plain.len()];
        if ra.read_at(0, &mut all).is_ok() {
            assert_eq!(all, plain);
        }
    }
});
