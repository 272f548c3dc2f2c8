//! The admin token (`[http] admin_token` or `CANDLED_ADMIN_TOKEN`): a secret that no `Debug`, `Display`, log line or
//! endpoint shows, and the `Authorization: Bearer` check of the admin endpoints, in constant time.

use std::fmt;

/// The environment variable that sets the admin token; when set and not empty it wins over `[http] admin_token`.
pub const ADMIN_TOKEN_ENV: &str = "CANDLED_ADMIN_TOKEN";

/// What `Debug` and `Display` print instead of the token.
const REDACTED: &str = "[redacted]";

/// The admin token. Its text can only be compared, never read back or printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// `None` for an empty text: an empty token turns nothing on.
    pub fn new(text: String) -> Option<Self> {
        (!text.is_empty()).then_some(Self(text))
    }

    /// Whether `given` is the token. Takes the same time for every `given` of one length, whatever its bytes.
    pub fn matches(&self, given: &str) -> bool {
        constant_time_eq(self.0.as_bytes(), given.as_bytes())
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminToken({REDACTED})")
    }
}

impl fmt::Display for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// The token in force: the environment's when set and not empty, else the file's.
pub fn token_in_force(from_file: Option<AdminToken>, from_env: Option<String>) -> Option<AdminToken> {
    from_env.and_then(AdminToken::new).or(from_file)
}

/// Compares every byte (up to the longer length) whatever the first difference: no early exit.
#[inline(never)]
fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    let length = expected.len().max(given.len());
    let mut difference = u8::from(expected.len() != given.len());
    for index in 0..length {
        let a = expected.get(index).copied().unwrap_or(0);
        let b = given.get(index).copied().unwrap_or(0);
        difference |= std::hint::black_box(a ^ b);
    }
    difference == 0
}

/// Why a request to an admin endpoint is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token is configured: the admin endpoints do not exist on this instance (404).
    NoTokenConfigured,
    /// No `Authorization: Bearer <token>` header (401).
    MissingBearer,
    /// A bearer token that is not the admin token (403).
    WrongToken,
}

/// Checks the `Authorization` header's value against the configured token.
pub fn authorize(configured: Option<&AdminToken>, authorization: Option<&str>) -> Result<(), Refusal> {
    let token = configured.ok_or(Refusal::NoTokenConfigured)?;
    let given = authorization.and_then(bearer).ok_or(Refusal::MissingBearer)?;
    if token.matches(given) { Ok(()) } else { Err(Refusal::WrongToken) }
}

/// The credentials of a `Bearer` authorization (the scheme is case-insensitive, RFC 7235).
fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, credentials) = authorization.trim().split_once(' ')?;
    let credentials = credentials.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> AdminToken {
        AdminToken::new(text.into()).expect("not empty")
    }

    #[test]
    fn the_token_is_never_printed() {
        let secret = token("s3cr3t-t0ken");
        // TC0: Debug, TC1: Display, TC2: Debug of a value holding it.
        for shown in [format!("{secret:?}"), secret.to_string(), format!("{:?}", Some(secret.clone()))] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains(REDACTED), "{shown}");
        }
    }

    #[test]
    fn the_environment_wins_when_set_and_not_empty() {
        let file = || Some(token("from-file"));
        let cases = [
            // TC0: only the file.
            (file(), None, Some("from-file")),
            // TC1: only the environment.
            (None, Some("from-env"), Some("from-env")),
            // TC2: both: the environment wins.
            (file(), Some("from-env"), Some("from-env")),
            // TC3: an empty environment variable counts as unset.
            (file(), Some(""), Some("from-file")),
            // TC4: neither.
            (None, Some(""), None),
        ];
        for (index, (from_file, from_env, want)) in cases.into_iter().enumerate() {
            let got = token_in_force(from_file, from_env.map(str::to_owned));
            assert_eq!(got, want.map(token), "TC{index}");
        }
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let configured = token("abc123");
        let cases = [
            // TC0: no token configured: the endpoint does not exist, whatever the header.
            (None, Some("Bearer abc123"), Err(Refusal::NoTokenConfigured)),
            // TC1: no header.
            (Some(&configured), None, Err(Refusal::MissingBearer)),
            // TC2: another scheme.
            (Some(&configured), Some("Basic abc123"), Err(Refusal::MissingBearer)),
            // TC3: the scheme alone.
            (Some(&configured), Some("Bearer "), Err(Refusal::MissingBearer)),
            // TC4: the right token; the scheme is case-insensitive.
            (Some(&configured), Some("Bearer abc123"), Ok(())),
            (Some(&configured), Some("bearer abc123"), Ok(())),
            // TC5: a wrong token, a prefix of it, a longer one, one differing in the last byte.
            (Some(&configured), Some("Bearer nope"), Err(Refusal::WrongToken)),
            (Some(&configured), Some("Bearer abc12"), Err(Refusal::WrongToken)),
            (Some(&configured), Some("Bearer abc1234"), Err(Refusal::WrongToken)),
            (Some(&configured), Some("Bearer abc124"), Err(Refusal::WrongToken)),
        ];
        for (index, (configured, header, want)) in cases.into_iter().enumerate() {
            assert_eq!(authorize(configured, header), want, "case {index}: {header:?}");
        }
    }

    #[test]
    fn an_empty_token_is_no_token() {
        assert_eq!(AdminToken::new(String::new()), None);
    }
}
