//! An accounts API that returns errmap catalog errors: register, log in,
//! confirm an email, look up OAuth clients. Kept in memory.
//!
//! ```sh
//! cargo run --example accounts -- 127.0.0.1:50052
//! ```
//!
//! - `accounts.v1.Accounts` is open; its handlers return catalog codes, with
//!   `BadRequest` field violations for the field codes (30, 31, 32).
//! - `accounts.v1.OAuthClients` sits behind errmap's auth interceptor: it
//!   needs the token `Login` returns (21, 10, 11 otherwise).
//! - Both run inside `ErrmapServer`, so behind the response layer, beside
//!   the lookup service, health and reflection.
//! - Errors answer in the caller's language: handlers keep the request
//!   metadata and pass it to `.locale(..)` or `to_status_for(..)`, so a
//!   client that sends `accept-language: ru` reads Russian
//!   `LocalizedMessage` details.
//!
//! Passwords are kept in plain text: this is an example, not a user store.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use errmap::Catalog as _;
use errmap::ErrorCode;
use errmap_server::{
    auth::{AuthInterceptor, Claims, JwtVerifier},
    server::{ErrmapServer, ServerConfig},
};
use tonic::{metadata::MetadataMap, Request, Response, Status};

mod pb {
    #![allow(missing_docs, unreachable_pub)]
    include!(concat!(env!("OUT_DIR"), "/accounts.v1.rs"));
}

use pb::{
    accounts_server::{Accounts, AccountsServer},
    o_auth_clients_server::{OAuthClients, OAuthClientsServer},
};

/// The HS256 secret the example signs its access tokens with.
const TOKEN_SECRET: &[u8] = b"example secret: replace me in real life";
/// Access tokens live this long.
const TOKEN_LIFETIME_SECS: u64 = 15 * 60;

#[derive(Debug, Clone)]
struct User {
    id: String,
    username: String,
    email: String,
    password: String,
    email_confirmed: bool,
    deactivated: bool,
}

#[derive(Debug, Clone)]
struct Client {
    id: String,
    owner_id: String,
    secret: String,
    redirect_uri: String,
}

#[derive(Debug, Clone)]
struct AuthCode {
    client_id: String,
    redirect_uri: String,
    user_id: String,
}

#[derive(Debug, Default)]
struct Data {
    users: Vec<User>,
    /// Confirmation token to the email it confirms.
    confirmations: HashMap<String, String>,
    clients: HashMap<String, Client>,
    codes: HashMap<String, AuthCode>,
}

/// The in-memory store both services share.
#[derive(Debug, Clone, Default)]
struct Store {
    data: Arc<Mutex<Data>>,
    next_id: Arc<AtomicU64>,
}

impl Store {
    /// A store with a few users, clients and codes to play with.
    fn seeded() -> Self {
        let store = Store::default();
        {
            let mut data = store.data.lock().unwrap();
            for (id, username, email, password, deactivated) in [
                ("u-alice", "alice", "alice@example.com", "wonderland", false),
                ("u-bob", "bobby", "bob@example.com", "builder1", false),
                ("u-banned", "banned", "banned@example.com", "password", true),
            ] {
                data.users.push(User {
                    id: id.into(),
                    username: username.into(),
                    email: email.into(),
                    password: password.into(),
                    email_confirmed: true,
                    deactivated,
                });
            }
            // A token for an email no account has any more.
            data.confirmations
                .insert("confirm-stale".into(), "old@example.com".into());
            for (id, owner, secret, redirect) in [
                (
                    "client-alice",
                    "u-alice",
                    "s3cret",
                    "https://app.example/callback",
                ),
                ("client-bob", "u-bob", "b0b", "https://bob.example/callback"),
            ] {
                data.clients.insert(
                    id.into(),
                    Client {
                        id: id.into(),
                        owner_id: owner.into(),
                        secret: secret.into(),
                        redirect_uri: redirect.into(),
                    },
                );
            }
            data.codes.insert(
                "code-1".into(),
                AuthCode {
                    client_id: "client-alice".into(),
                    redirect_uri: "https://app.example/callback".into(),
                    user_id: "u-alice".into(),
                },
            );
        }
        store
    }

    fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{prefix}-{n}-{nanos:08x}")
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Data>, Status> {
        // A poisoned lock is a server bug: 42, without internals.
        self.data
            .lock()
            .map_err(|_| ErrorCode::ApiInternalServerError.into())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks the sign-up fields; every broken field is reported, under the code
/// of the first, in the caller's language.
fn validate_registration(r: &pb::RegisterRequest, caller: &MetadataMap) -> Result<(), Status> {
    let mut failed: Vec<(ErrorCode, &'static str, &'static str)> = Vec::new();
    let username_len = r.username.chars().count();
    if !(5..=15).contains(&username_len) {
        failed.push((
            ErrorCode::AuthUsernameInvalid,
            "username",
            "must be 5 to 15 characters long",
        ));
    }
    let email_ok = match r.email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !r.email.contains(char::is_whitespace)
        }
        None => false,
    };
    if !email_ok {
        failed.push((
            ErrorCode::AuthEmailInvalid,
            "email",
            "is not a valid email address",
        ));
    }
    let password_len = r.password.chars().count();
    if !(6..=63).contains(&password_len) {
        failed.push((
            ErrorCode::AuthPasswordInvalid,
            "password",
            "must be 6 to 63 characters long",
        ));
    }
    let Some(&(code, ..)) = failed.first() else {
        return Ok(());
    };
    let mut builder = code.builder().locale(caller);
    for (_, field, description) in failed {
        builder = builder.field_violation(field, description);
    }
    Err(builder.build()?)
}

#[derive(Debug, Clone)]
struct AccountsApi {
    store: Store,
}

#[tonic::async_trait]
impl Accounts for AccountsApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        // The metadata stays at hand: errors answer in its accept-language.
        let (caller, _, r) = request.into_parts();
        validate_registration(&r, &caller)?;
        let mut data = self.store.lock()?;
        if data.users.iter().any(|u| u.username == r.username) {
            return Err(ErrorCode::AuthUsernameTaken
                .builder()
                .locale(&caller)
                .metadata("field", "username")
                .build()?);
        }
        if data
            .users
            .iter()
            .any(|u| u.email.eq_ignore_ascii_case(&r.email))
        {
            return Err(ErrorCode::AuthEmailTaken
                .builder()
                .locale(&caller)
                .metadata("field", "email")
                .build()?);
        }
        let user_id = self.store.new_id("u");
        let confirmation_token = self.store.new_id("confirm");
        data.confirmations
            .insert(confirmation_token.clone(), r.email.clone());
        data.users.push(User {
            id: user_id.clone(),
            username: r.username,
            email: r.email,
            password: r.password,
            email_confirmed: false,
            deactivated: false,
        });
        Ok(Response::new(pb::RegisterResponse {
            user_id,
            confirmation_token,
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let (caller, _, r) = request.into_parts();
        let user = {
            let data = self.store.lock()?;
            data.users
                .iter()
                .find(|u| u.username == r.login || u.email.eq_ignore_ascii_case(&r.login))
                .filter(|u| u.password == r.password)
                .cloned()
        };
        // Unknown login and wrong password are told apart on purpose by no one.
        let user = user.ok_or_else(|| ErrorCode::AuthInvalidCredentials.to_status_for(&caller))?;
        if user.deactivated {
            return Err(ErrorCode::UserDeactivated.to_status_for(&caller));
        }
        let claims = serde_json::json!({
            "sub": user.id,
            "exp": now() + TOKEN_LIFETIME_SECS,
        });
        let access_token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(TOKEN_SECRET),
        )
        .map_err(|_| ErrorCode::ApiInternalServerError)?;
        Ok(Response::new(pb::LoginResponse { access_token }))
    }

    async fn confirm_email(
        &self,
        request: Request<pb::ConfirmEmailRequest>,
    ) -> Result<Response<pb::ConfirmEmailResponse>, Status> {
        let (caller, _, r) = request.into_parts();
        let mut data = self.store.lock()?;
        let email = data
            .confirmations
            .get(&r.token)
            .cloned()
            .ok_or_else(|| ErrorCode::EmailConfirmationTokenInvalid.to_status_for(&caller))?;
        let user = data
            .users
            .iter_mut()
            .find(|u| u.email.eq_ignore_ascii_case(&email))
            .ok_or_else(|| ErrorCode::EmailConfirmationUserNotFound.to_status_for(&caller))?;
        if user.email_confirmed {
            return Err(ErrorCode::EmailConfirmationAlreadyConfirmed.to_status_for(&caller));
        }
        user.email_confirmed = true;
        Ok(Response::new(pb::ConfirmEmailResponse { email }))
    }
}

#[derive(Debug, Clone)]
struct OAuthClientsApi {
    store: Store,
}

/// The caller, as verified by the interceptor.
fn caller<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .extensions()
        .get::<Claims>()
        .and_then(|c| c.subject())
        .map(str::to_owned)
        .ok_or_else(|| ErrorCode::AuthRequired.into())
}

fn client_not_found(client_id: &str, caller: &MetadataMap) -> Status {
    ErrorCode::OauthClientNotFound
        .builder()
        .locale(caller)
        .metadata("clientId", client_id.to_owned())
        .build()
        .unwrap_or_else(Status::from)
}

#[tonic::async_trait]
impl OAuthClients for OAuthClientsApi {
    async fn get_client(
        &self,
        request: Request<pb::GetClientRequest>,
    ) -> Result<Response<pb::OAuthClient>, Status> {
        let user_id = caller(&request)?;
        let (metadata, _, r) = request.into_parts();
        let data = self.store.lock()?;
        let client = data
            .clients
            .get(&r.client_id)
            .ok_or_else(|| client_not_found(&r.client_id, &metadata))?;
        if client.owner_id != user_id {
            return Err(ErrorCode::OauthClientForbidden.to_status_for(&metadata));
        }
        Ok(Response::new(pb::OAuthClient {
            client_id: client.id.clone(),
            owner_id: client.owner_id.clone(),
            redirect_uri: client.redirect_uri.clone(),
        }))
    }

    async fn exchange_code(
        &self,
        request: Request<pb::ExchangeCodeRequest>,
    ) -> Result<Response<pb::ExchangeCodeResponse>, Status> {
        caller(&request)?;
        let (metadata, _, r) = request.into_parts();
        let data = self.store.lock()?;
        let client = data
            .clients
            .get(&r.client_id)
            .ok_or_else(|| client_not_found(&r.client_id, &metadata))?;
        if client.secret != r.client_secret {
            return Err(ErrorCode::OauthClientSecretMismatch.to_status_for(&metadata));
        }
        let code = data.codes.get(&r.code).ok_or_else(|| {
            ErrorCode::ApiInvalidRequest
                .builder()
                .locale(&metadata)
                .field_violation("code", "unknown or used authorization code")
                .build()
                .unwrap_or_else(Status::from)
        })?;
        if code.client_id != r.client_id {
            return Err(ErrorCode::OauthClientIdMismatch.to_status_for(&metadata));
        }
        if code.redirect_uri != r.redirect_uri {
            return Err(ErrorCode::OauthClientRedirectUriMismatch.to_status_for(&metadata));
        }
        Ok(Response::new(pb::ExchangeCodeResponse {
            user_id: code.user_id.clone(),
        }))
    }
}

/// The example server: errmap's services plus the accounts API.
fn server(store: Store) -> ErrmapServer {
    let oauth = OAuthClientsServer::with_interceptor(
        OAuthClientsApi {
            store: store.clone(),
        },
        AuthInterceptor::new(JwtVerifier::hs256(TOKEN_SECRET)),
    );
    ErrmapServer::new(ServerConfig::default())
        .add_service(AccountsServer::new(AccountsApi { store }))
        .add_service(oauth)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:50052")
        .parse()?;
    let listener = errmap_server::server::bind(addr).await?;
    println!("{}", listener.local_addr()?);
    server(Store::seeded())
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use errmap::ErrorStatusExt as _;
    use pb::{accounts_client::AccountsClient, o_auth_clients_client::OAuthClientsClient};
    use tonic::transport::Channel;

    struct Running {
        channel: Channel,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        handle: tokio::task::JoinHandle<()>,
    }

    impl Running {
        async fn start() -> Self {
            let listener = errmap_server::server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let handle = tokio::spawn(async move {
                server(Store::seeded())
                    .serve(listener, async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
            let channel = Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            Self {
                channel,
                stop: Some(tx),
                handle,
            }
        }

        async fn stop(mut self) {
            let _ = self.stop.take().unwrap().send(());
            tokio::time::timeout(std::time::Duration::from_secs(30), self.handle)
                .await
                .unwrap()
                .unwrap();
        }
    }

    fn register(username: &str, email: &str, password: &str) -> pb::RegisterRequest {
        pb::RegisterRequest {
            username: username.into(),
            email: email.into(),
            password: password.into(),
        }
    }

    fn with_token<T>(message: T, token: &str) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    fn fields(status: &Status) -> Vec<String> {
        status
            .error_details()
            .and_then(|d| d.bad_request().cloned())
            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn registration_codes() {
        let server = Running::start().await;
        let mut accounts = AccountsClient::new(server.channel.clone());

        let cases = [
            (
                register("alice", "new@example.com", "longenough"),
                ErrorCode::AuthUsernameTaken,
                vec![],
            ),
            (
                register("newuser", "ALICE@example.com", "longenough"),
                ErrorCode::AuthEmailTaken,
                vec![],
            ),
            (
                register("newuser", "not-an-email", "longenough"),
                ErrorCode::AuthEmailInvalid,
                vec!["email"],
            ),
            (
                register("newuser", "n@example.com", "short"),
                ErrorCode::AuthPasswordInvalid,
                vec!["password"],
            ),
            (
                register("abc", "n@example.com", "longenough"),
                ErrorCode::AuthUsernameInvalid,
                vec!["username"],
            ),
            (
                register("abc", "bad", "x"),
                ErrorCode::AuthUsernameInvalid,
                vec!["username", "email", "password"],
            ),
        ];
        for (request, code, violations) in cases {
            let status = accounts.register(request).await.unwrap_err();
            assert_eq!(status.error_code(), Some(code), "{status:?}");
            assert_eq!(status.code(), code.entry().grpc_code());
            assert_eq!(fields(&status), violations, "{code}");
        }
        let created = accounts
            .register(register("carol", "carol@example.com", "password1"))
            .await
            .unwrap()
            .into_inner();
        assert!(!created.user_id.is_empty());
        server.stop().await;
    }

    #[tokio::test]
    async fn login_and_confirmation_codes() {
        let server = Running::start().await;
        let mut accounts = AccountsClient::new(server.channel.clone());
        let login = |login: &str, password: &str| pb::LoginRequest {
            login: login.into(),
            password: password.into(),
        };
        for (request, code) in [
            (login("alice", "wrong"), ErrorCode::AuthInvalidCredentials),
            (login("nobody", "x"), ErrorCode::AuthInvalidCredentials),
            (login("banned", "password"), ErrorCode::UserDeactivated),
        ] {
            let status = accounts.login(request).await.unwrap_err();
            assert_eq!(status.error_code(), Some(code));
        }
        accounts
            .login(login("alice@example.com", "wonderland"))
            .await
            .unwrap();

        let confirm = |token: &str| pb::ConfirmEmailRequest {
            token: token.into(),
        };
        let created = accounts
            .register(register("dave1", "dave@example.com", "password1"))
            .await
            .unwrap()
            .into_inner();
        for (token, code) in [
            ("nope", ErrorCode::EmailConfirmationTokenInvalid),
            ("", ErrorCode::EmailConfirmationTokenInvalid),
            ("confirm-stale", ErrorCode::EmailConfirmationUserNotFound),
        ] {
            let status = accounts.confirm_email(confirm(token)).await.unwrap_err();
            assert_eq!(status.error_code(), Some(code), "{token}");
        }
        let ok = accounts
            .confirm_email(confirm(&created.confirmation_token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ok.email, "dave@example.com");
        let again = accounts
            .confirm_email(confirm(&created.confirmation_token))
            .await
            .unwrap_err();
        assert_eq!(
            again.error_code(),
            Some(ErrorCode::EmailConfirmationAlreadyConfirmed)
        );
        server.stop().await;
    }

    /// A Russian-speaking client: every handler error comes back with a
    /// ru-RU `LocalizedMessage`; grpc-message stays English.
    #[tokio::test]
    async fn errors_answer_in_the_callers_language() {
        let server = Running::start().await;
        let mut accounts = AccountsClient::new(server.channel.clone());
        fn in_russian<T>(message: T) -> Request<T> {
            let mut request = Request::new(message);
            request.metadata_mut().insert(
                "accept-language",
                "ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7".parse().unwrap(),
            );
            request
        }
        let check = |status: &Status, code: ErrorCode, locale: &str| {
            assert_eq!(status.error_code(), Some(code), "{status:?}");
            let details = status.check_error_details().unwrap();
            let localized = details.localized_message().unwrap();
            assert_eq!(localized.locale, locale);
            assert_eq!(
                Some(localized.message.as_str()),
                code.entry().message_in(locale)
            );
            assert_eq!(status.message(), code.entry().message());
        };

        let status = accounts
            .register(in_russian(register("al", "bad", "x")))
            .await
            .unwrap_err();
        check(&status, ErrorCode::AuthUsernameInvalid, "ru-RU");
        assert_eq!(fields(&status), ["username", "email", "password"]);

        let status = accounts
            .register(in_russian(register(
                "alice",
                "new@example.com",
                "longenough",
            )))
            .await
            .unwrap_err();
        check(&status, ErrorCode::AuthUsernameTaken, "ru-RU");

        let status = accounts
            .login(in_russian(pb::LoginRequest {
                login: "banned".into(),
                password: "password".into(),
            }))
            .await
            .unwrap_err();
        check(&status, ErrorCode::UserDeactivated, "ru-RU");

        // The interceptor, then a handler behind it.
        let mut oauth = OAuthClientsClient::new(server.channel.clone());
        let status = oauth
            .get_client(in_russian(pb::GetClientRequest {
                client_id: "client-alice".into(),
            }))
            .await
            .unwrap_err();
        check(&status, ErrorCode::AuthRequired, "ru-RU");

        // Without the header: en-US.
        let status = accounts
            .login(pb::LoginRequest {
                login: "banned".into(),
                password: "password".into(),
            })
            .await
            .unwrap_err();
        check(&status, ErrorCode::UserDeactivated, "en-US");
        server.stop().await;
    }

    #[tokio::test]
    async fn oauth_codes_behind_the_interceptor() {
        let server = Running::start().await;
        let mut accounts = AccountsClient::new(server.channel.clone());
        let token = accounts
            .login(pb::LoginRequest {
                login: "alice".into(),
                password: "wonderland".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .access_token;
        let mut oauth = OAuthClientsClient::new(server.channel.clone());
        let get = |id: &str| pb::GetClientRequest {
            client_id: id.into(),
        };

        // The interceptor's codes.
        let status = oauth
            .get_client(Request::new(get("client-alice")))
            .await
            .unwrap_err();
        assert_eq!(status.error_code(), Some(ErrorCode::AuthRequired));
        let status = oauth
            .get_client(with_token(get("client-alice"), "x.y.z"))
            .await
            .unwrap_err();
        assert_eq!(status.error_code(), Some(ErrorCode::AuthInvalidToken));
        let expired = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": "u-alice", "exp": now() - 600}),
            &jsonwebtoken::EncodingKey::from_secret(TOKEN_SECRET),
        )
        .unwrap();
        let status = oauth
            .get_client(with_token(get("client-alice"), &expired))
            .await
            .unwrap_err();
        assert_eq!(status.error_code(), Some(ErrorCode::AuthExpiredToken));

        // The handlers' codes.
        let mine = oauth
            .get_client(with_token(get("client-alice"), &token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(mine.owner_id, "u-alice");
        let status = oauth
            .get_client(with_token(get("client-bob"), &token))
            .await
            .unwrap_err();
        assert_eq!(status.error_code(), Some(ErrorCode::OauthClientForbidden));
        let status = oauth
            .get_client(with_token(get("nope"), &token))
            .await
            .unwrap_err();
        assert_eq!(status.error_code(), Some(ErrorCode::OauthClientNotFound));
        assert_eq!(
            status.error_details().unwrap().metadata("clientId"),
            Some("nope")
        );

        let exchange =
            |client: &str, secret: &str, code: &str, redirect: &str| pb::ExchangeCodeRequest {
                client_id: client.into(),
                client_secret: secret.into(),
                code: code.into(),
                redirect_uri: redirect.into(),
            };
        let cb = "https://app.example/callback";
        for (request, code) in [
            (
                exchange("nope", "s3cret", "code-1", cb),
                ErrorCode::OauthClientNotFound,
            ),
            (
                exchange("client-alice", "wrong", "code-1", cb),
                ErrorCode::OauthClientSecretMismatch,
            ),
            (
                exchange("client-bob", "b0b", "code-1", cb),
                ErrorCode::OauthClientIdMismatch,
            ),
            (
                exchange("client-alice", "s3cret", "code-1", "https://evil.example/"),
                ErrorCode::OauthClientRedirectUriMismatch,
            ),
            (
                exchange("client-alice", "s3cret", "code-9", cb),
                ErrorCode::ApiInvalidRequest,
            ),
        ] {
            let status = oauth
                .exchange_code(with_token(request, &token))
                .await
                .unwrap_err();
            assert_eq!(status.error_code(), Some(code), "{status:?}");
        }
        let ok = oauth
            .exchange_code(with_token(
                exchange("client-alice", "s3cret", "code-1", cb),
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ok.user_id, "u-alice");
        server.stop().await;
    }
}
