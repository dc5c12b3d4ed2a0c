//! Public key strings and secret key files: never panic; what parses prints back the same way.
#![no_main]

use coffre_seal::{RecipientPublicKey, RecipientSecretKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(key) = text.parse::<RecipientPublicKey>() {
        assert_eq!(key.to_string().parse::<RecipientPublicKey>().ok(), Some(key));
    }
    if let Ok(secret) = RecipientSecretKey::from_key_file(text) {
        let again = RecipientSecretKey::from_key_file(&secret.to_key_file()).expect("round trip");
        assert_eq!(again.public(), secret.public());
    }
});
