//! HPKE interoperability: our aws-lc-rs based DHKEM(P-384)/HKDF-SHA384/AES-256-GCM (the sealed
//! format) and DHKEM(P-256)/HKDF-SHA256/AES-256-GCM (key release) against the independent
//! RustCrypto implementation in the `hpke` crate, in both directions, plus `DeriveKeyPair`
//! equality. (RFC 9180's published vectors have neither suite: no P-384, and P-256 only with
//! AES-128-GCM.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use ::hpke::aead::AesGcm256;
use ::hpke::kdf::{HkdfSha256, HkdfSha384};
use ::hpke::kem::{DhP256HkdfSha256, DhP384HkdfSha384};
use ::hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use coffre_seal::hpke::KeyPair;

#[test]
fn derive_key_pair_matches_reference() {
    for i in 0u8..32 {
        let ikm: Vec<u8> = (0..48).map(|j| j ^ i.wrapping_mul(31)).collect();
        let ours = KeyPair::derive(&ikm).unwrap();
        let (_, theirs) = DhP384HkdfSha384::derive_keypair(&ikm);
        assert_eq!(ours.public_key().as_slice(), theirs.to_bytes().as_slice(), "ikm #{i}");
    }
}

#[test]
fn reference_seals_we_open() {
    for i in 0u8..8 {
        let ikm = [i; 48];
        let ours = KeyPair::derive(&ikm).unwrap();
        let (_, pk) = DhP384HkdfSha384::derive_keypair(&ikm);
        let msg = vec![i; 32 + usize::from(i)];
        let (enc, ct) = ::hpke::single_shot_seal::<AesGcm256, HkdfSha384, DhP384HkdfSha384>(
            &OpModeS::Base,
            &pk,
            b"coffre interop info",
            &msg,
            b"aad",
        )
        .unwrap();
        let pt = coffre_seal::hpke::open(&ours, &enc.to_bytes(), b"coffre interop info", b"aad", &ct).unwrap();
        assert_eq!(&pt[..], &msg[..]);
        assert!(coffre_seal::hpke::open(&ours, &enc.to_bytes(), b"other info", b"aad", &ct).is_none());
    }
}

#[test]
fn we_seal_reference_opens() {
    for i in 0u8..8 {
        let ikm = [i ^ 0x5a; 48];
        let (sk, pk) = DhP384HkdfSha384::derive_keypair(&ikm);
        let msg = vec![0xa5 ^ i; 32];
        let sealed =
            coffre_seal::hpke::seal(&pk.to_bytes(), b"info", b"aad", &msg, &mut coffre_seal::SystemRandom).unwrap();
        let enc = <DhP384HkdfSha384 as Kem>::EncappedKey::from_bytes(&sealed.enc).unwrap();
        let pt = ::hpke::single_shot_open::<AesGcm256, HkdfSha384, DhP384HkdfSha384>(
            &OpModeR::Base,
            &sk,
            &enc,
            b"info",
            &sealed.ciphertext,
            b"aad",
        )
        .unwrap();
        assert_eq!(pt, msg);
    }
}

#[test]
fn release_suite_derive_key_pair_matches_reference() {
    for i in 0u8..32 {
        let ikm: Vec<u8> = (0..32).map(|j| j ^ i.wrapping_mul(29)).collect();
        let ours = coffre_seal::hpke::p256::KeyPair::derive(&ikm).unwrap();
        let (_, theirs) = DhP256HkdfSha256::derive_keypair(&ikm);
        assert_eq!(ours.public_key().as_slice(), theirs.to_bytes().as_slice(), "ikm #{i}");
    }
}

#[test]
fn release_suite_interoperates_both_ways() {
    use coffre_seal::hpke::p256;
    for i in 0u8..8 {
        let ikm = [i ^ 0x3c; 32];
        let ours = p256::KeyPair::derive(&ikm).unwrap();
        let (sk, pk) = DhP256HkdfSha256::derive_keypair(&ikm);
        let msg = vec![i; 32];
        // They seal, we open.
        let (enc, ct) = ::hpke::single_shot_seal::<AesGcm256, HkdfSha256, DhP256HkdfSha256>(
            &OpModeS::Base,
            &pk,
            b"coffre release",
            &msg,
            b"aad",
        )
        .unwrap();
        let pt = p256::open(&ours, &enc.to_bytes(), b"coffre release", b"aad", &ct).unwrap();
        assert_eq!(&pt[..], &msg[..]);
        assert!(p256::open(&ours, &enc.to_bytes(), b"coffre release", b"other aad", &ct).is_none());
        // We seal, they open.
        let sealed = p256::seal(&pk.to_bytes(), b"info", b"aad", &msg, &mut coffre_seal::SystemRandom).unwrap();
        let enc = <DhP256HkdfSha256 as Kem>::EncappedKey::from_bytes(&sealed.enc).unwrap();
        let pt = ::hpke::single_shot_open::<AesGcm256, HkdfSha256, DhP256HkdfSha256>(
            &OpModeR::Base,
            &sk,
            &enc,
            b"info",
            &sealed.ciphertext,
            b"aad",
        )
        .unwrap();
        assert_eq!(pt, msg);
    }
}
