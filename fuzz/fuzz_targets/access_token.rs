//! Bearer access tokens (HS256 JWTs) as `Authorization: Bearer` verification sees them:
//! any text; or a header and claims of the fuzzer's choosing under a genuine signature
//! (what a holder of a leaked key, or a bug in signing, could present).
#![no_main]
mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consentry::auth::access_token;
use libfuzzer_sys::fuzz_target;
use ring::hmac;

fn signed(header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &common::TOKEN_KEY);
    let sig = hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let now = common::now();
    let token = match mode % 3 {
        0 => match std::str::from_utf8(rest) {
            Ok(s) => s.to_owned(),
            Err(_) => return,
        },
        1 => signed(br#"{"alg":"HS256","typ":"JWT","kid":"ts1"}"#, rest),
        _ => match rest.iter().position(|b| *b == 0) {
            Some(i) => signed(&rest[..i], &rest[i + 1..]),
            None => signed(rest, br#"{"iss":"consentry"}"#),
        },
    };
    if let Some(claims) = access_token::verify(common::keyring(), &token, now) {
        assert_eq!(claims.iss, access_token::ISSUER);
        assert!(claims.exp > now.unix_seconds());
        assert!(mode % 3 != 0 || token.matches('.').count() == 2);
    }
});
