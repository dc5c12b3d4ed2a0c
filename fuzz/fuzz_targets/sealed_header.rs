//! Header parser: never panics; whatever parses re-encodes to exactly the bytes it came from
//! (one encoding per header), and opening with a key never panics either.
#![no_main]

use coffre_seal::{Header, RecipientSecretKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, used)) = Header::parse_prefix(data) {
        assert_eq!(header.as_bytes(), &data[..used]);
        assert_eq!(header.len(), used);
        let mut stream = data;
        let again = Header::read_from(&mut stream).expect("the streaming parser agrees");
        assert!(again == header);
        if let Ok(id) = RecipientSecretKey::derive_for_tests(&[7u8; 48]) {
            let _ = header.unwrap_data_key(&id);
        }
    }
});
