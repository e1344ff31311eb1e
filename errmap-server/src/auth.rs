//! The auth interceptor: every call to a protected service must carry a
//! valid token, and every refusal is a catalog error.
//!
//! | what the call carries | status |
//! |---|---|
//! | no token, or an empty one | 21 `AUTH_REQUIRED` |
//! | a malformed token, a bad signature, a wrong issuer or audience | 10 `AUTH_INVALID_TOKEN` |
//! | an expired token | 11 `AUTH_EXPIRED_TOKEN` |
//! | a scheme other than `Bearer`, two tokens that disagree, non-ASCII metadata | 10 `AUTH_INVALID_TOKEN` |
//!
//! The token is read from `authorization: Bearer <token>` or, as the legacy
//! HTTP API allowed, from a `token` metadata entry. It is never logged,
//! echoed, or put into error metadata. The verified [`Claims`] are put into
//! the request extensions for the handler.
//!
//! Verification is pluggable through [`TokenVerifier`]; [`JwtVerifier`]
//! checks JWTs signed with HS256 (shared secret), RS256 or ES256 (public key
//! in PEM).
//!
//! ```
//! use errmap_server::auth::{AuthInterceptor, JwtVerifier};
//! use errmap::pb::error_catalog_server::ErrorCatalogServer;
//! use errmap_server::service::CatalogService;
//!
//! let verifier = JwtVerifier::hs256(b"a shared secret of decent length")
//!     .with_issuer("https://auth.example.com")
//!     .with_leeway(std::time::Duration::from_secs(30));
//! let protected = ErrorCatalogServer::with_interceptor(
//!     CatalogService::new(),
//!     AuthInterceptor::new(verifier),
//! );
//! # drop(protected);
//! ```

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use jsonwebtoken::{
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet},
    Algorithm, DecodingKey, Validation,
};
use serde_json::{Map, Value};
use tonic::{service::Interceptor, Request, Status};

use errmap::{Catalog as _, ErrorCode};

use crate::sanitize::{self, RateLimit, RateLimitByKey};

/// The claims of a verified token, put into the request extensions.
///
/// ```
/// # use errmap_server::auth::Claims;
/// fn handler(request: &tonic::Request<()>) -> Option<String> {
///     request.extensions().get::<Claims>()?.subject().map(str::to_owned)
/// }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims(Arc<Map<String, Value>>);

impl Claims {
    /// Claims from a JSON object.
    pub fn new(claims: Map<String, Value>) -> Self {
        Self(Arc::new(claims))
    }

    /// Every claim.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The `sub` claim.
    pub fn subject(&self) -> Option<&str> {
        self.0.get("sub")?.as_str()
    }

    /// Any claim.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }
}

/// Why a token was refused. Only the kind reaches the client, as 10 or 11;
/// the detail is for server logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token cannot be parsed.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The signature does not verify.
    #[error("bad token signature")]
    BadSignature,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The token is well-formed and signed, but its claims are not
    /// acceptable (issuer, audience, not-before, algorithm...).
    #[error("token refused: {0}")]
    Refused(String),
}

impl TokenError {
    /// The catalog code sent for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Expired => ErrorCode::AuthExpiredToken,
            _ => ErrorCode::AuthInvalidToken,
        }
    }
}

/// Checks a bearer token. Implement it to plug in another scheme.
pub trait TokenVerifier: Send + Sync + 'static {
    /// Verifies `token` (never empty) and returns its claims.
    fn verify(&self, token: &str) -> Result<Claims, TokenError>;
}

impl<F> TokenVerifier for F
where
    F: Fn(&str) -> Result<Claims, TokenError> + Send + Sync + 'static,
{
    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self(token)
    }
}

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The PEM holds neither an RSA nor an EC (P-256) public key.
    #[error("not an RSA or EC P-256 public key in PEM: {0}")]
    NotAPublicKey(String),
    /// The shared secret is empty.
    #[error("the shared secret is empty")]
    EmptySecret,
    /// The JSON Web Key Set cannot be used.
    #[error("not a usable JSON Web Key Set: {0}")]
    BadJwks(String),
    /// The shared secret is shorter than the 256 bits RFC 7518 §3.2
    /// requires for HS256.
    #[error(
        "the HS256 secret has {len} bytes; RFC 7518 §3.2 requires at least {MIN_HS256_SECRET}"
    )]
    ShortSecret {
        /// The length given.
        len: usize,
    },
}

/// The shortest HS256 secret accepted by [`JwtVerifier::try_hs256`]: 32
/// bytes, the size of the hash (RFC 7518 §3.2).
pub const MIN_HS256_SECRET: usize = 32;

/// How far in the future (beyond the leeway) a token's `iat` may lie before
/// the token is refused: a token issued "later" was forged or comes from a
/// clock that cannot be trusted.
pub const MAX_IAT_SKEW: Duration = Duration::from_secs(60);

/// Verifies JWTs with `jsonwebtoken`: HS256 with a shared secret, or RS256 /
/// ES256 with a public key. `exp` is required.
///
/// Tokens that verified are remembered (up to [`JwtVerifier::CACHE_SIZE`])
/// until they expire, so a client that reuses its token pays for the
/// signature check once; a token is always compared whole. Each thread
/// also keeps the last few tokens it saw verified, with claims of its own,
/// so that a call with a token it saw touches no lock and no count that the
/// other threads write. A verifier whose validation changes
/// ([`with_issuer`](Self::with_issuer), …) starts with an empty memory.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    /// A JSON Web Key Set: each key with its `kid` and its validation.
    set: Vec<(String, DecodingKey, Validation)>,
    /// Which verifier this is in the threads' memories: new for every key
    /// and every change of validation, shared by clones.
    id: u64,
    // Looked up on every call, with the token as the key: foldhash, seeded
    // per process, not SipHash (a 200-byte token cost 500 instructions).
    // Only tokens that verified are ever inserted.
    cache: Arc<Mutex<TokenMemory>>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("leeway", &self.validation.leeway)
            .field("iss", &self.validation.iss)
            .field("aud", &self.validation.aud)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    fn validation(algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.required_spec_claims = HashSet::from(["exp".to_owned()]);
        validation
    }

    fn new(key: DecodingKey, algorithm: Algorithm) -> Self {
        Self {
            key,
            validation: Self::validation(algorithm),
            set: Vec::new(),
            id: next_verifier_id(),
            cache: Arc::default(),
        }
    }

    /// RS256 and ES256 keys from an RFC 7517 JSON Web Key Set: the token's
    /// `kid` header chooses the key. A token whose `kid` is not in the set,
    /// or that has no `kid` while the set has several keys, is refused.
    ///
    /// ```
    /// let jwks = r#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
    ///   "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    ///   "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
    /// let verifier = errmap_server::auth::JwtVerifier::from_jwks(jwks.as_bytes()).unwrap();
    /// # drop(verifier);
    /// ```
    pub fn from_jwks(json: &[u8]) -> Result<Self, KeyError> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|e| KeyError::BadJwks(e.to_string()))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or_else(|| KeyError::BadJwks("a key has no \"kid\"".to_owned()))?;
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                _ => {
                    return Err(KeyError::BadJwks(format!(
                        "key {kid:?} is neither RSA nor EC P-256"
                    )))
                }
            };
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| KeyError::BadJwks(format!("key {kid:?}: {e}")))?;
            if keys.iter().any(|(k, _, _)| *k == kid) {
                return Err(KeyError::BadJwks(format!("kid {kid:?} appears twice")));
            }
            keys.push((kid, key, Self::validation(algorithm)));
        }
        let Some((_, first, validation)) = keys.first().cloned() else {
            return Err(KeyError::BadJwks("the set has no keys".to_owned()));
        };
        Ok(Self {
            key: first,
            validation,
            set: keys,
            id: next_verifier_id(),
            cache: Arc::default(),
        })
    }

    /// The kids of a key set, in order (empty for a single key).
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.set.iter().map(|(kid, _, _)| kid.as_str())
    }

    /// Applies `change` to the validation of the key, and of every key of a
    /// set.
    /// Tokens verified before the change are not remembered after it: a
    /// clone of a verifier without an issuer, say, must not pass the
    /// tokens the original let through.
    fn each_validation(mut self, change: impl Fn(&mut Validation)) -> Self {
        change(&mut self.validation);
        for (_, _, validation) in &mut self.set {
            change(validation);
        }
        self.id = next_verifier_id();
        self.cache = Arc::default();
        self
    }

    /// How many verified tokens are remembered at most; past that the
    /// memory is cleared.
    pub const CACHE_SIZE: usize = 4096;

    /// HS256 with a shared secret, unchecked; prefer
    /// [`try_hs256`](Self::try_hs256), which refuses short secrets.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::new(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// HS256 with a shared secret, refusing one shorter than
    /// [`MIN_HS256_SECRET`] bytes.
    ///
    /// ```
    /// use errmap_server::auth::{JwtVerifier, KeyError};
    ///
    /// assert!(matches!(JwtVerifier::try_hs256(b"short"), Err(KeyError::ShortSecret { len: 5 })));
    /// assert!(JwtVerifier::try_hs256(&[7u8; 32]).is_ok());
    /// ```
    pub fn try_hs256(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::EmptySecret);
        }
        if secret.len() < MIN_HS256_SECRET {
            return Err(KeyError::ShortSecret { len: secret.len() });
        }
        Ok(Self::hs256(secret))
    }

    /// RS256 with an RSA public key, or ES256 with an EC P-256 public key,
    /// in PEM; the key type decides the algorithm.
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Self, KeyError> {
        match DecodingKey::from_rsa_pem(pem) {
            Ok(key) => Ok(Self::new(key, Algorithm::RS256)),
            Err(rsa_error) => match DecodingKey::from_ec_pem(pem) {
                Ok(key) => Ok(Self::new(key, Algorithm::ES256)),
                Err(ec_error) => Err(KeyError::NotAPublicKey(format!(
                    "as RSA: {rsa_error}; as EC: {ec_error}"
                ))),
            },
        }
    }

    /// Accepts tokens this much past `exp` (or before `nbf`). Default 0.
    pub fn with_leeway(self, leeway: Duration) -> Self {
        self.each_validation(|v| v.leeway = leeway.as_secs())
    }

    /// Requires the `iss` claim to be `issuer`.
    pub fn with_issuer(self, issuer: &str) -> Self {
        self.each_validation(|v| {
            v.set_issuer(&[issuer]);
            v.required_spec_claims.insert("iss".to_owned());
        })
    }

    /// Requires the `aud` claim to hold `audience`.
    pub fn with_audience(self, audience: &str) -> Self {
        self.each_validation(|v| {
            v.set_audience(&[audience]);
            v.validate_aud = true;
            v.required_spec_claims.insert("aud".to_owned());
        })
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The tokens a verifier saw verified, with their claims and the time
/// (Unix seconds) until which they hold.
type TokenMemory = HashMap<String, (Claims, u64), foldhash::fast::RandomState>;

/// A fresh identity for a verifier in the threads' memories.
fn next_verifier_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// How many verified tokens each thread keeps at hand.
const RECENT_PER_THREAD: usize = 8;

/// A token a thread saw verified, for one verifier.
struct Recent {
    verifier: u64,
    token: Box<str>,
    /// A copy of this thread's own: its count is not shared.
    claims: Claims,
    valid_until: u64,
}

/// The tokens a thread saw verified last, replaced in turn.
#[derive(Default)]
struct RecentTokens {
    entries: Vec<Recent>,
    next: usize,
}

thread_local! {
    static RECENT: RefCell<RecentTokens> = RefCell::default();
}

impl JwtVerifier {
    /// The claims of a token verified before and not expired since: from
    /// this thread's memory, else from the shared one (and then kept in
    /// this thread's).
    fn remembered(&self, token: &str) -> Option<Claims> {
        let now = unix_now();
        let recent = RECENT.with(|recent| {
            let recent = recent.borrow();
            recent
                .entries
                .iter()
                .find(|e| e.verifier == self.id && *e.token == *token)
                .map(|e| (now <= e.valid_until).then(|| e.claims.clone()))
        });
        if let Some(claims) = recent {
            return claims;
        }
        let (claims, valid_until) = {
            let cache = self.cache.lock().ok()?;
            let (claims, valid_until) = cache.get(token)?;
            (now <= *valid_until).then(|| (claims.as_map().clone(), *valid_until))?
        };
        let claims = Claims::new(claims);
        self.keep_here(token, &claims, valid_until);
        Some(claims)
    }

    /// Keeps a verified token in this thread's memory.
    fn keep_here(&self, token: &str, claims: &Claims, valid_until: u64) {
        RECENT.with(|recent| {
            let mut recent = recent.borrow_mut();
            let entry = Recent {
                verifier: self.id,
                token: token.into(),
                claims: claims.clone(),
                valid_until,
            };
            if recent.entries.len() < RECENT_PER_THREAD {
                recent.entries.push(entry);
            } else {
                let at = recent.next;
                recent.entries[at] = entry;
                recent.next = (at + 1) % RECENT_PER_THREAD;
            }
        });
    }

    fn remember(&self, token: &str, claims: &Claims) {
        // Valid as long as `exp` (plus the leeway) accepts it.
        let Some(exp) = claims.get("exp").and_then(Value::as_u64) else {
            return;
        };
        let valid_until = exp.saturating_add(self.validation.leeway);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= Self::CACHE_SIZE {
                cache.clear();
            }
            cache.insert(token.to_owned(), (claims.clone(), valid_until));
        }
        self.keep_here(token, &Claims::new(claims.as_map().clone()), valid_until);
    }
}

impl JwtVerifier {
    /// The key (and its validation) that checks `token`: the only key, or
    /// the key of the set whose `kid` the token names.
    fn key_for(&self, token: &str) -> Result<(&DecodingKey, &Validation), TokenError> {
        if self.set.is_empty() {
            return Ok((&self.key, &self.validation));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| TokenError::Malformed(sanitize::escape(&e.to_string()).into_owned()))?;
        match (header.kid.as_deref(), self.set.as_slice()) {
            (None, [(_, key, validation)]) => Ok((key, validation)),
            (None, _) => Err(TokenError::Refused(
                "the token has no kid and the key set has several keys".to_owned(),
            )),
            (Some(kid), set) => set
                .iter()
                .find(|(k, _, _)| k == kid)
                .map(|(_, key, validation)| (key, validation))
                .ok_or_else(|| {
                    TokenError::Refused(format!(
                        "no key with kid {:?}",
                        sanitize::escape(kid).into_owned()
                    ))
                }),
        }
    }
}

impl TokenVerifier for JwtVerifier {
    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if let Some(claims) = self.remembered(token) {
            return Ok(claims);
        }
        let (key, validation) = self.key_for(token)?;
        match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
            Ok(data) => {
                let claims = Claims::new(data.claims);
                if let Some(iat) = claims.get("iat") {
                    let limit = unix_now()
                        .saturating_add(self.validation.leeway)
                        .saturating_add(MAX_IAT_SKEW.as_secs());
                    match iat.as_f64() {
                        Some(iat) if iat <= limit as f64 => {}
                        Some(_) => {
                            return Err(TokenError::Refused(
                                "the token's iat lies in the future".to_owned(),
                            ))
                        }
                        None => return Err(TokenError::Refused("iat is not a number".to_owned())),
                    }
                }
                self.remember(token, &claims);
                Ok(claims)
            }
            Err(error) => Err(match error.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidIssuer
                | ErrorKind::InvalidAudience
                | ErrorKind::InvalidSubject
                | ErrorKind::ImmatureSignature
                | ErrorKind::InvalidAlgorithm
                | ErrorKind::MissingRequiredClaim(_)
                | ErrorKind::InvalidClaimFormat(_) => {
                    TokenError::Refused(sanitize::escape(&error.to_string()).into_owned())
                }
                _ => TokenError::Malformed(sanitize::escape(&error.to_string()).into_owned()),
            }),
        }
    }
}

/// A verifier that can be replaced while the server runs: calls in flight
/// finish with the verifier they started with, new calls use the new one.
/// `errmap serve` replaces its JWT keys this way on SIGHUP.
///
/// ```
/// use errmap_server::auth::{JwtVerifier, ReloadableVerifier};
///
/// let keys = ReloadableVerifier::new(JwtVerifier::try_hs256(&[1; 32]).unwrap());
/// keys.replace(JwtVerifier::try_hs256(&[2; 32]).unwrap());
/// ```
#[derive(Debug)]
pub struct ReloadableVerifier<V> {
    current: crate::reload::Reloadable<V>,
}

impl<V: TokenVerifier> ReloadableVerifier<V> {
    /// Starts with `verifier`.
    pub fn new(verifier: V) -> Self {
        Self {
            current: crate::reload::Reloadable::new(verifier),
        }
    }

    /// Makes `verifier` the one new calls use.
    pub fn replace(&self, verifier: V) {
        self.current.store(verifier);
    }

    fn current(&self) -> Arc<V> {
        self.current.load()
    }
}

impl<V: TokenVerifier> TokenVerifier for ReloadableVerifier<V> {
    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.current().verify(token)
    }
}

impl<V: TokenVerifier> TokenVerifier for Arc<V> {
    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        (**self).verify(token)
    }
}

/// The tonic interceptor; see the [module docs](self).
///
/// Refusals are counted ([`refusals`](Self::refusals)) and logged at most
/// 20 a second, with every client-supplied text escaped.
#[derive(Clone)]
pub struct AuthInterceptor {
    verifier: Arc<dyn TokenVerifier>,
    refused: Arc<RateLimit>,
    /// Refusals by code: 21, 10, 11.
    by_code: Arc<[std::sync::atomic::AtomicU64; 3]>,
    /// Refusal logs, once a second per reason.
    refused_by_reason: Arc<RateLimitByKey>,
}

impl fmt::Debug for AuthInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthInterceptor").finish_non_exhaustive()
    }
}

impl AuthInterceptor {
    /// An interceptor checking tokens with `verifier`.
    pub fn new(verifier: impl TokenVerifier) -> Self {
        Self::from_arc(Arc::new(verifier))
    }

    /// An interceptor sharing an existing verifier.
    pub fn from_arc(verifier: Arc<dyn TokenVerifier>) -> Self {
        Self {
            verifier,
            refused: Arc::new(RateLimit::new(20, Duration::from_secs(1))),
            by_code: Arc::new(Default::default()),
            refused_by_reason: Arc::new(RateLimitByKey::new(Duration::from_secs(1))),
        }
    }

    /// Calls refused so far (no token, or a bad one), over every clone.
    pub fn refusals(&self) -> u64 {
        self.refused.total()
    }

    /// Calls refused so far, by the reason sent: `AUTH_REQUIRED`,
    /// `AUTH_INVALID_TOKEN`, `AUTH_EXPIRED_TOKEN`.
    pub fn refusals_by_reason(&self) -> [(&'static str, u64); 3] {
        let n = |i: usize| self.by_code[i].load(std::sync::atomic::Ordering::Relaxed);
        [
            ("AUTH_REQUIRED", n(0)),
            ("AUTH_INVALID_TOKEN", n(1)),
            ("AUTH_EXPIRED_TOKEN", n(2)),
        ]
    }

    /// Whether a refusal sent as `code` may be logged: at most once a
    /// second per reason (and 20 a second in all), with the number of
    /// those of that reason suppressed since.
    fn log_refusal(&self, code: ErrorCode) -> Option<u64> {
        let overall = self.refused.check();
        let mine = self.refused_by_reason.check(code.entry().name());
        overall.and(mine)
    }

    fn count(&self, code: ErrorCode) {
        let at = match code {
            ErrorCode::AuthRequired => 0,
            ErrorCode::AuthExpiredToken => 2,
            _ => 1,
        };
        self.by_code[at].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Where the token came from, for the refusal's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NotAscii,
    NotBearer,
    Disagree,
}

/// The one token the call carries, `Ok(None)` if none, or why it is refused.
fn extract_token(metadata: &tonic::metadata::MetadataMap) -> Result<Option<&str>, Refusal> {
    fn add<'a>(found: &mut Option<&'a str>, token: &'a str) -> Result<(), Refusal> {
        match *found {
            _ if token.is_empty() => Ok(()),
            Some(previous) if previous != token => Err(Refusal::Disagree),
            _ => {
                *found = Some(token);
                Ok(())
            }
        }
    }
    let mut found: Option<&str> = None;
    // Names as constants: a name given as text is parsed on every lookup.
    for value in metadata.as_ref().get_all(http::header::AUTHORIZATION) {
        let text = value.to_str().map_err(|_| Refusal::NotAscii)?.trim();
        if text.is_empty() {
            add(&mut found, "")?;
            continue;
        }
        let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Refusal::NotBearer);
        }
        add(&mut found, rest.trim())?;
    }
    const TOKEN: http::HeaderName = http::HeaderName::from_static("token");
    for value in metadata.as_ref().get_all(TOKEN) {
        let text = value.to_str().map_err(|_| Refusal::NotAscii)?.trim();
        add(&mut found, text)?;
    }
    Ok(found)
}

fn refuse(
    code: ErrorCode,
    message: &'static str,
    metadata: &tonic::metadata::MetadataMap,
) -> Status {
    code.builder()
        .locale(metadata)
        .message(message)
        .build()
        .unwrap_or_else(Status::from)
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token = match extract_token(request.metadata()) {
            Ok(Some(token)) => token,
            Ok(None) => {
                if let Some(suppressed) = self.log_refusal(ErrorCode::AuthRequired) {
                    tracing::info!(suppressed, "call without a token refused");
                }
                self.count(ErrorCode::AuthRequired);
                return Err(ErrorCode::AuthRequired.to_status_for(request.metadata()));
            }
            Err(refusal) => {
                if let Some(suppressed) = self.log_refusal(ErrorCode::AuthInvalidToken) {
                    tracing::info!(?refusal, suppressed, "token refused before verification");
                }
                self.count(ErrorCode::AuthInvalidToken);
                return Err(refuse(
                    ErrorCode::AuthInvalidToken,
                    match refusal {
                        Refusal::NotAscii => "The authorization metadata is not ASCII.",
                        Refusal::NotBearer => "Only the Bearer scheme is accepted.",
                        Refusal::Disagree => "The call carries two different tokens.",
                    },
                    request.metadata(),
                ));
            }
        };
        match self.verifier.verify(token) {
            Ok(claims) => {
                request.extensions_mut().insert(claims);
                Ok(request)
            }
            Err(error) => {
                // The reason is logged, escaped, never the token.
                if let Some(suppressed) = self.log_refusal(error.code()) {
                    tracing::info!(
                        error = %sanitize::escape(&error.to_string()),
                        suppressed,
                        "token refused"
                    );
                }
                self.count(error.code());
                Err(error.code().to_status_for(request.metadata()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::{MetadataMap, MetadataValue};

    fn map(entries: &[(&'static str, &str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in entries {
            m.append(*k, MetadataValue::try_from(*v).unwrap());
        }
        m
    }

    #[test]
    fn tokens_are_found_in_both_places() {
        assert_eq!(
            extract_token(&map(&[("authorization", "Bearer abc")])),
            Ok(Some("abc"))
        );
        assert_eq!(
            extract_token(&map(&[("authorization", "bearer  abc ")])),
            Ok(Some("abc"))
        );
        assert_eq!(extract_token(&map(&[("token", "abc")])), Ok(Some("abc")));
        assert_eq!(
            extract_token(&map(&[("authorization", "Bearer abc"), ("token", "abc")])),
            Ok(Some("abc"))
        );
    }

    #[test]
    fn missing_and_empty_tokens_are_none() {
        assert_eq!(extract_token(&map(&[])), Ok(None));
        assert_eq!(
            extract_token(&map(&[("authorization", "Bearer ")])),
            Ok(None)
        );
        assert_eq!(
            extract_token(&map(&[("authorization", "Bearer")])),
            Ok(None)
        );
        assert_eq!(extract_token(&map(&[("token", "")])), Ok(None));
    }

    #[test]
    fn remembered_tokens_expire_with_their_exp() {
        let secret = b"cache test secret, long enough";
        let verifier = JwtVerifier::hs256(secret);
        let sign = |exp: u64| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &serde_json::json!({"sub": "u", "exp": exp}),
                &jsonwebtoken::EncodingKey::from_secret(secret),
            )
            .unwrap()
        };
        let token = sign(unix_now() + 60);
        let claims = verifier.verify(&token).unwrap();
        assert_eq!(verifier.remembered(&token), Some(claims));
        // A remembered token whose time is up is checked again, and refused.
        let stale = sign(unix_now() - 3600);
        verifier.remember(
            &stale,
            &Claims::new(serde_json::Map::from_iter([(
                "exp".to_owned(),
                serde_json::json!(unix_now() - 3600),
            )])),
        );
        assert_eq!(verifier.remembered(&stale), None);
        assert_eq!(verifier.verify(&stale), Err(TokenError::Expired));
        // Near-identical tokens are not confused.
        let mut forged = token.clone();
        forged.pop();
        assert!(verifier.verify(&forged).is_err());
    }

    #[test]
    fn a_token_remembered_for_one_verifier_is_not_taken_by_another() {
        let sign = |secret: &[u8], claims: serde_json::Value| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret),
            )
            .unwrap()
        };
        let exp = unix_now() + 60;
        let a = JwtVerifier::hs256(b"the first verifier's secret, long");
        let b = JwtVerifier::hs256(b"the second verifier's secret, long");
        let token = sign(
            b"the first verifier's secret, long",
            serde_json::json!({"sub": "u", "exp": exp}),
        );
        // Verified, then taken from this thread's memory, by `a` only.
        assert!(a.verify(&token).is_ok());
        assert!(a.verify(&token).is_ok());
        assert_eq!(
            a.remembered(&token)
                .and_then(|c| c.subject().map(str::to_owned)),
            Some("u".to_owned())
        );
        assert_eq!(b.remembered(&token), None);
        assert!(b.verify(&token).is_err());
        // A clone given an issuer does not pass what the original passed.
        let with_issuer = a.clone().with_issuer("errmap-tests");
        assert_eq!(with_issuer.remembered(&token), None);
        assert!(with_issuer.verify(&token).is_err());
        assert!(a.verify(&token).is_ok(), "the original keeps its memory");
        // Another thread finds it in the shared memory, with claims of its
        // own.
        let shared = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let first = a.remembered(&token)?;
                    let again = a.remembered(&token)?;
                    Some(Arc::ptr_eq(&first.0, &again.0))
                })
                .join()
                .unwrap()
        });
        assert_eq!(shared, Some(true));
        let here = a.remembered(&token).unwrap();
        assert!(!Arc::ptr_eq(&here.0, &a.cache.lock().unwrap()[&token].0 .0));
    }

    #[test]
    fn a_thread_keeps_only_its_last_few_tokens() {
        let secret = b"a secret for many tokens, long enough";
        let verifier = JwtVerifier::hs256(secret);
        let tokens: Vec<String> = (0..RECENT_PER_THREAD + 3)
            .map(|i| {
                jsonwebtoken::encode(
                    &jsonwebtoken::Header::default(),
                    &serde_json::json!({"sub": format!("u{i}"), "exp": unix_now() + 60}),
                    &jsonwebtoken::EncodingKey::from_secret(secret),
                )
                .unwrap()
            })
            .collect();
        for token in &tokens {
            assert!(verifier.verify(token).is_ok());
        }
        let here = RECENT.with(|r| r.borrow().entries.len());
        assert_eq!(here, RECENT_PER_THREAD);
        // The oldest are still in the shared memory.
        for (i, token) in tokens.iter().enumerate() {
            assert_eq!(
                verifier
                    .remembered(token)
                    .and_then(|c| c.subject().map(str::to_owned)),
                Some(format!("u{i}"))
            );
        }
    }

    #[test]
    fn odd_tokens_are_refused() {
        assert_eq!(
            extract_token(&map(&[("authorization", "Basic dXNlcjpwYXNz")])),
            Err(Refusal::NotBearer)
        );
        assert_eq!(
            extract_token(&map(&[("authorization", "Bearer a"), ("token", "b")])),
            Err(Refusal::Disagree)
        );
        let mut m = MetadataMap::new();
        m.insert(
            "authorization",
            MetadataValue::try_from(&b"Bearer \xc3\xa9"[..]).unwrap(),
        );
        assert_eq!(extract_token(&m), Err(Refusal::NotAscii));
    }
}
