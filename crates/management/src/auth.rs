//! Who may call what: the API key (`X-Api-Key`, grants everything), HS256 bearer tokens with
//! scopes and capabilities, and the open mode (neither configured: loopback only).
//!
//! A missing or invalid credential is 401; a valid token whose claims do not cover the task or
//! the route's capability is 403.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::secret::Secret;

/// Token issuer the API accepts.
pub const ISSUER: &str = "NomadIIS";
/// Token audience the API accepts.
pub const AUDIENCE: &str = "ManagementApi";
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: i64 = 30;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Read a task's status.
    Status,
    /// Read and write the task folder, upload applications.
    FilesystemAccess,
    /// Start, stop, recycle pools.
    AppPoolLifecycle,
    /// Take screenshots.
    Screenshots,
    /// Take process dumps.
    ProcDump,
    /// The debug view of every task.
    Debug,
}

impl Capability {
    /// The name used in tokens.
    pub fn name(self) -> &'static str {
        match self {
            Self::Status => "Status",
            Self::FilesystemAccess => "FilesystemAccess",
            Self::AppPoolLifecycle => "AppPoolLifecycle",
            Self::Screenshots => "Screenshots",
            Self::ProcDump => "ProcDump",
            Self::Debug => "Debug",
        }
    }
}

/// The configured credentials.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// `--management-api-key`.
    pub api_key: Option<Secret>,
    /// `--management-api-jwt-secret`.
    pub jwt_secret: Option<Secret>,
}

impl Credentials {
    /// Whether any credential is required.
    pub fn secured(&self) -> bool {
        self.api_key.is_some() || self.jwt_secret.is_some()
    }
}

/// The verified caller.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The API key, or the open mode: everything is allowed.
    Everything,
    /// A bearer token: allowed what its claims say.
    Token(Claims),
}

/// The claims of a verified token that scope it.
#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// Namespace or `*`.
    pub namespace: String,
    /// Job name or `*`.
    pub job_name: String,
    /// Allocation id or `*`.
    pub alloc_id: String,
    /// Capability names, `*` for all.
    pub capabilities: Vec<String>,
}

/// What a task is, for scope checks.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Job name.
    pub job_name: &'a str,
    /// Allocation id.
    pub alloc_id: &'a str,
}

impl Principal {
    /// Whether the caller holds `capability`.
    pub fn has(&self, capability: Capability) -> bool {
        match self {
            Self::Everything => true,
            Self::Token(claims) => claims
                .capabilities
                .iter()
                .any(|c| c == "*" || c == capability.name()),
        }
    }

    /// Whether the caller may act on a task of this scope.
    pub fn covers(&self, scope: Scope<'_>) -> bool {
        match self {
            Self::Everything => true,
            Self::Token(claims) => {
                let fits = |claim: &str, value: &str| claim == "*" || claim == value;
                fits(&claims.namespace, scope.namespace)
                    && fits(&claims.job_name, scope.job_name)
                    && fits(&claims.alloc_id, scope.alloc_id)
            }
        }
    }

    /// Whether the caller may act on any task (a token scoped to `*` everywhere).
    pub fn covers_all(&self) -> bool {
        match self {
            Self::Everything => true,
            Self::Token(c) => c.namespace == "*" && c.job_name == "*" && c.alloc_id == "*",
        }
    }
}

/// Why a request was not authenticated (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential was sent.
    #[error(
        "missing credentials: send the API key in X-Api-Key or a bearer token in Authorization"
    )]
    Missing,
    /// The key does not match.
    #[error("invalid API key")]
    BadKey,
    /// A bearer token was sent but tokens are not enabled.
    #[error("bearer tokens are not enabled (no --management-api-jwt-secret)")]
    TokensDisabled,
    /// The token is malformed, badly signed, expired or not for us.
    #[error("invalid bearer token: {0}")]
    BadToken(String),
}

/// Checks the request's credentials. `api_key` is the `X-Api-Key` header, `authorization` the
/// `Authorization` header; `now` is seconds since the Unix epoch.
pub fn authenticate(
    credentials: &Credentials,
    api_key: Option<&[u8]>,
    authorization: Option<&[u8]>,
    now: i64,
) -> Result<Principal, AuthError> {
    if !credentials.secured() {
        return Ok(Principal::Everything);
    }
    if let Some(sent) = api_key {
        return match &credentials.api_key {
            Some(key) if key.matches(sent) => Ok(Principal::Everything),
            _ => Err(AuthError::BadKey),
        };
    }
    let Some(authorization) = authorization else {
        return Err(AuthError::Missing);
    };
    let token = std::str::from_utf8(authorization)
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or(AuthError::Missing)?;
    let Some(secret) = &credentials.jwt_secret else {
        return Err(AuthError::TokensDisabled);
    };
    verify_token(secret, token, now).map(Principal::Token)
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// A string or an array of strings, as `aud` and `capabilities` may be.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(one) => vec![one],
            Self::Many(many) => many,
        }
    }
}

#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    aud: Option<OneOrMany>,
    exp: Option<f64>,
    nbf: Option<f64>,
    namespace: Option<String>,
    #[serde(rename = "jobName")]
    job_name: Option<String>,
    #[serde(rename = "allocId")]
    alloc_id: Option<String>,
    capabilities: Option<OneOrMany>,
}

/// Verifies an HS256 token and returns its scoping claims.
pub fn verify_token(secret: &Secret, token: &str, now: i64) -> Result<Claims, AuthError> {
    let bad = |why: &str| AuthError::BadToken(why.to_owned());
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not three dot-separated parts"));
    };
    let header: Header = decode_part(header).ok_or_else(|| bad("unreadable header"))?;
    if header.alg != "HS256" {
        return Err(bad("only HS256 is accepted"));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| bad("unreadable signature"))?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose().as_bytes());
    let signed = &token[..header_and_payload_len(token)];
    ring::hmac::verify(&key, signed.as_bytes(), &signature)
        .map_err(|_| bad("signature does not match"))?;
    let claims: RawClaims = decode_part(payload).ok_or_else(|| bad("unreadable claims"))?;
    if claims.iss.as_deref() != Some(ISSUER) {
        return Err(bad("issuer must be NomadIIS"));
    }
    if !claims
        .aud
        .map(OneOrMany::into_vec)
        .is_some_and(|aud| aud.iter().any(|a| a == AUDIENCE))
    {
        return Err(bad("audience must be ManagementApi"));
    }
    let Some(exp) = claims.exp else {
        return Err(bad("no expiry (exp)"));
    };
    if (exp as i64) + LEEWAY_SECS < now {
        return Err(bad("expired"));
    }
    if claims
        .nbf
        .is_some_and(|nbf| (nbf as i64) - LEEWAY_SECS > now)
    {
        return Err(bad("not valid yet (nbf)"));
    }
    Ok(Claims {
        namespace: claims.namespace.unwrap_or_else(|| "*".into()),
        job_name: claims.job_name.unwrap_or_else(|| "*".into()),
        alloc_id: claims.alloc_id.unwrap_or_else(|| "*".into()),
        capabilities: claims
            .capabilities
            .map(OneOrMany::into_vec)
            .unwrap_or_default(),
    })
}

fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Signs `claims` (a JSON object) as an HS256 token. The API never issues tokens; tests and
/// operators' tools do.
pub fn sign_token(secret: &str, claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn creds() -> Credentials {
        Credentials {
            api_key: Some(Secret::new("12345")),
            jwt_secret: Some(Secret::new("jwt-secret")),
        }
    }

    fn claims(extra: serde_json::Value) -> serde_json::Value {
        let mut base = json!({"iss": ISSUER, "aud": AUDIENCE, "exp": NOW + 60});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    fn auth(key: Option<&str>, bearer: Option<String>) -> Result<Principal, AuthError> {
        let bearer = bearer.map(|t| format!("Bearer {t}"));
        authenticate(
            &creds(),
            key.map(str::as_bytes),
            bearer.as_deref().map(str::as_bytes),
            NOW,
        )
    }

    #[test]
    fn key_grants_everything_and_a_wrong_or_missing_key_does_not() {
        assert!(matches!(
            auth(Some("12345"), None),
            Ok(Principal::Everything)
        ));
        assert_eq!(auth(Some("1234"), None).unwrap_err(), AuthError::BadKey);
        assert_eq!(auth(None, None).unwrap_err(), AuthError::Missing);
        let open = authenticate(&Credentials::default(), None, None, NOW).unwrap();
        assert!(open.has(Capability::ProcDump));
    }

    #[test]
    fn tokens_carry_scopes_and_capabilities() {
        let token = sign_token(
            "jwt-secret",
            &claims(
                json!({"namespace": "default", "jobName": "web", "allocId": "*",
                           "capabilities": ["Status", "AppPoolLifecycle"]}),
            ),
        );
        let principal = auth(None, Some(token)).unwrap();
        assert!(principal.has(Capability::Status));
        assert!(!principal.has(Capability::ProcDump));
        let scope = |ns, job| Scope {
            namespace: ns,
            job_name: job,
            alloc_id: "a1",
        };
        assert!(principal.covers(scope("default", "web")));
        assert!(!principal.covers(scope("default", "other")));
        assert!(!principal.covers(scope("prod", "web")));
        let star = sign_token("jwt-secret", &claims(json!({"capabilities": "*"})));
        let principal = auth(None, Some(star)).unwrap();
        assert!(principal.has(Capability::Debug) && principal.covers_all());
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let reason = |token: String| match auth(None, Some(token)) {
            Err(AuthError::BadToken(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(reason(sign_token("other", &claims(json!({})))).contains("signature"));
        assert!(
            reason(sign_token("jwt-secret", &claims(json!({"exp": NOW - 100}))))
                .contains("expired")
        );
        assert!(reason(sign_token("jwt-secret", &claims(json!({"iss": "x"})))).contains("issuer"));
        assert!(
            reason(sign_token("jwt-secret", &claims(json!({"aud": ["x"]})))).contains("audience")
        );
        let mut no_exp = claims(json!({}));
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(reason(sign_token("jwt-secret", &no_exp)).contains("exp"));
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims(json!({})).to_string())
        );
        assert!(reason(none_alg).contains("HS256"));
        assert!(reason("a.b".into()).contains("three"));
        let only_key = Credentials {
            api_key: Some(Secret::new("k")),
            jwt_secret: None,
        };
        let token = sign_token("x", &claims(json!({})));
        let header = format!("Bearer {token}");
        assert_eq!(
            authenticate(&only_key, None, Some(header.as_bytes()), NOW).unwrap_err(),
            AuthError::TokensDisabled
        );
    }
}
