//! Synthetic bank customer messages for the demo and tests: realistic-looking personal data
//! (names, IBANs, card numbers, e-mail addresses, phone numbers) inside messages with a labelled
//! intent. Entirely generated: no real person's data, no model hub, deterministic for a seed.

use std::io::{self, Write};

const FIRST: &[&str] = &[
    "Amélie", "Lukas", "Sofia", "Jan", "Chiara", "Mateo", "Elif", "Noah", "Ingrid", "Tomasz", "Léa", "Joost", "Maria",
    "Henrik", "Zoë", "Pieter", "Aoife", "Dmitri", "Inès", "Karim",
];
const LAST: &[&str] = &[
    "Dubois",
    "Schneider",
    "Rossi",
    "Jansen",
    "García",
    "Nowak",
    "Yılmaz",
    "Larsen",
    "Murphy",
    "Novák",
    "Moreau",
    "Fischer",
    "Bianchi",
    "de Vries",
    "Kowalski",
    "Lindqvist",
    "O'Brien",
    "Horvath",
    "Silva",
    "Petit",
];
const CITIES: &[&str] =
    &["Lyon", "Hamburg", "Milano", "Utrecht", "Kraków", "Göteborg", "Porto", "Gent", "Wien", "Cork"];
const COUNTRIES: &[(&str, usize)] =
    &[("FR", 23), ("DE", 18), ("IT", 23), ("NL", 14), ("BE", 12), ("AT", 16), ("ES", 20)];

/// Intents and message templates. `{name}`, `{iban}`, `{card}`, `{email}`, `{phone}`, `{city}`,
/// `{amount}` are filled in.
const INTENTS: &[(&str, &[&str])] = &[
    (
        "card_lost",
        &[
            "Hello, this is {name}. I lost my card ending {card} in {city} yesterday, please block it. You can reach me on {phone}.",
            "My debit card {card} was stolen this morning. Block it now please! {name}, {email}",
        ],
    ),
    (
        "transfer_fees",
        &[
            "Why was I charged {amount} EUR for a transfer from {iban}? I thought SEPA transfers were free. Regards, {name}",
            "Hi, {name} here ({email}). What are the fees for sending {amount} EUR abroad from account {iban}?",
        ],
    ),
    (
        "limit_increase",
        &[
            "I would like to raise the daily limit on card {card} to {amount} EUR for a trip. {name}, tel {phone}",
            "Can you increase my transfer limit on {iban}? I need to pay {amount} EUR for a car. Thanks, {name}",
        ],
    ),
    (
        "address_change",
        &[
            "I moved to {city}. Please update the address on account {iban}. {name}, {email}",
            "New address for {name}: 12 rue des Lilas, {city}. My phone is {phone}.",
        ],
    ),
    (
        "fraud_report",
        &[
            "There is a payment of {amount} EUR on {iban} that I did not make! Call me at {phone}. {name}",
            "I got an SMS asking for my code for card {card}, I think it's a scam. {name} ({email})",
        ],
    ),
    (
        "account_closure",
        &[
            "Please close my account {iban} and send the balance to my new bank. {name}",
            "I want to close all my accounts. Contact me at {email} or {phone}. Best, {name}",
        ],
    ),
    (
        "login_problem",
        &[
            "I can't log in to the app since the update, it says my device is not recognised. {name}, {phone}",
            "My online banking is locked after three attempts. Username is my email {email}. {name}",
        ],
    ),
    (
        "mortgage_question",
        &[
            "What rate could I get on a mortgage of {amount}000 EUR for a flat in {city}? {name}, {email}",
            "Can I repay part of my mortgage early without a penalty? Account {iban}. {name}",
        ],
    ),
];

/// A small deterministic generator (SplitMix64): reproducible data, no dependency.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }
}

fn iban(rng: &mut SplitMix) -> String {
    let (cc, len) = COUNTRIES[rng.below(COUNTRIES.len())];
    format!("{cc}{}", rng.digits(len - 2))
}

/// A 16-digit card number with a valid Luhn check digit (test ranges only: prefix 4000 00).
fn card(rng: &mut SplitMix) -> String {
    let mut digits: Vec<u32> = "400000".chars().filter_map(|c| c.to_digit(10)).collect();
    digits.extend(rng.digits(9).chars().filter_map(|c| c.to_digit(10)));
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    digits.push((10 - sum % 10) % 10);
    digits.iter().map(|d| char::from_digit(*d, 10).unwrap_or('0')).collect()
}

fn fold(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            'é' | 'è' | 'ë' => Some('e'),
            'ö' | 'ó' => Some('o'),
            'ı' => Some('i'),
            'á' => Some('a'),
            c if c.is_ascii_alphanumeric() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// One record: the customer's message as `prompt`, the intent label as `completion`.
pub fn record(rng: &mut SplitMix) -> (String, &'static str) {
    let (intent, templates) = INTENTS[rng.below(INTENTS.len())];
    let first = rng.pick(FIRST);
    let last = rng.pick(LAST);
    let name = format!("{first} {last}");
    let email = format!("{}.{}{}@example.eu", fold(first), fold(last), rng.below(100));
    let phone = format!("+33 6 {} {} {} {}", rng.digits(2), rng.digits(2), rng.digits(2), rng.digits(2));
    let text = rng
        .pick(templates)
        .replace("{name}", &name)
        .replace("{iban}", &iban(rng))
        .replace("{card}", &card(rng))
        .replace("{email}", &email)
        .replace("{phone}", &phone)
        .replace("{city}", rng.pick(CITIES))
        .replace("{amount}", &(50 + rng.below(4950)).to_string());
    (text, intent)
}

/// Writes `count` JSONL records `{"prompt": …, "completion": …}` to `out`; returns bytes written.
pub fn write_jsonl(out: &mut dyn Write, count: usize, seed: u64) -> io::Result<u64> {
    let mut rng = SplitMix::new(seed);
    let mut total = 0u64;
    for _ in 0..count {
        let (prompt, completion) = record(&mut rng);
        let line = serde_json::json!({ "prompt": prompt, "completion": completion }).to_string();
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        total += line.len() as u64 + 1;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_valid_json_with_pii_and_intents() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_jsonl(&mut a, 200, 7).unwrap();
        write_jsonl(&mut b, 200, 7).unwrap();
        assert_eq!(a, b);
        let mut intents = std::collections::HashSet::new();
        for line in String::from_utf8(a).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            intents.insert(v["completion"].as_str().unwrap().to_owned());
            assert!(v["prompt"].as_str().unwrap().len() > 20);
        }
        assert_eq!(intents.len(), INTENTS.len());
    }

    #[test]
    fn card_numbers_pass_luhn() {
        let mut rng = SplitMix::new(1);
        for _ in 0..100 {
            let c = card(&mut rng);
            assert_eq!(c.len(), 16);
            let sum: u32 = c
                .chars()
                .rev()
                .enumerate()
                .map(|(i, ch)| {
                    let d = ch.to_digit(10).unwrap();
                    if i % 2 == 1 {
                        let x = d * 2;
                        if x > 9 { x - 9 } else { x }
                    } else {
                        d
                    }
                })
                .sum();
            assert_eq!(sum % 10, 0, "{c}");
        }
    }
}
