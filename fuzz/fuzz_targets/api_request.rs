//! What an API client sends — the `Host` header, the URI with its query parameters, the
//! silence body — parsed as the routes parse it. It may be refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Layout: host \n uri \n body (the body may hold anything, newlines included).
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let host = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let uri = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    // A fixed clock keeps runs repeatable; u64::MAX-ish values come from the body.
    api::fuzz::parse_untrusted(&host, &uri, body, 1_800_000_000_000);
});
