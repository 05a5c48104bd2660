//! Journey: a hospital signs its staff in with Keycloak. With the realm's JWKS URL (HTTPS, its
//! certificate from the hospital's own CA), issuer and audience configured, both APIs take
//! Keycloak's RS256 access tokens (roles from `realm_access`), and a token signed with the
//! development secret no longer opens anything.

use events::Role;
use jsonwebtoken::{Algorithm, Header};
use reqwest::Method;
use serde_json::json;
use tests::tls::{TestCa, tls_proxy};
use tests::{Cluster, Databases, Stack, ada, rsa_signing_key, token};

const REALM: &str = "/realms/healthplane";
const AUDIENCE: &str = "healthplane-api";

#[tokio::test]
async fn keycloak_tokens_open_both_apis_and_the_development_secret_no_longer_does() {
    // Given Keycloak's realm keys, served as Keycloak serves them.
    let (key, n) = rsa_signing_key();
    let jwks = json!({"keys": [
        {"kid": "kc-sig-1", "kty": "RSA", "alg": "RS256", "use": "sig", "n": n, "e": "AQAB"},
        {"kid": "kc-enc-1", "kty": "RSA", "alg": "RSA-OAEP", "use": "enc", "n": n, "e": "AQAB"}
    ]});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let plain = listener.local_addr().expect("address").to_string();
    let certs = format!("{REALM}/protocol/openid-connect/certs");
    let app = axum::Router::new().route(
        &certs,
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    // Keycloak behind HTTPS, with a certificate from the hospital's own CA.
    let ca = TestCa::new("hospital CA");
    let (cert, cert_key) = ca.issue("localhost");
    let front = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let keycloak = format!(
        "https://localhost:{}",
        front.local_addr().expect("address").port()
    );
    tls_proxy(front, &cert, &cert_key, plain);
    let issuer = format!("{keycloak}{REALM}");
    let stack = Stack::start_with_env(
        Cluster::shared(),
        Databases::fresh(),
        &[
            ("HEALTHPLANE_JWT_JWKS_URL", format!("{keycloak}{certs}")),
            ("HEALTHPLANE_JWT_ISSUER", issuer.clone()),
            ("HEALTHPLANE_JWT_AUDIENCE", AUDIENCE.to_string()),
            ("HEALTHPLANE_JWT_JWKS_CA_PEM", ca.cert_pem.clone()),
        ],
    )
    .await;

    // When the front desk signs in: an access token as Keycloak issues it.
    let now = chrono::Utc::now().timestamp();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("kc-sig-1".into());
    let claims = json!({
        "exp": now + 300, "iat": now, "jti": "1f0c", "iss": issuer, "aud": AUDIENCE,
        "sub": "9b1c6f1e-front-desk", "typ": "Bearer", "azp": "healthplane-portal",
        "realm_access": {"roles": ["default-roles-healthplane", "offline_access", "admin"]},
        "scope": "openid profile", "preferred_username": "front.desk"
    });
    let keycloak_token = jsonwebtoken::encode(&header, &claims, &key).expect("sign");
    let development_token = token(Role::Admin, "front-desk", None);
    let body = ada().to_string().into_bytes();

    // Then the command API takes the Keycloak token and refuses the development one.
    let (status, _, registered) = stack
        .command(
            Method::POST,
            "/v1/patients",
            Some(&keycloak_token),
            &[],
            body.clone(),
        )
        .await;
    assert_eq!(status, 201, "{registered}");
    let (status, _, refused) = stack
        .command(
            Method::POST,
            "/v1/patients",
            Some(&development_token),
            &[],
            body,
        )
        .await;
    assert_eq!(status, 401, "{refused}");

    // And so does the query API.
    let query = "query($id: ID!) { patient(id: $id) { id } }";
    let variables = json!({"id": registered["id"]});
    let (status, _, answer) = stack
        .graphql(&keycloak_token, &[], query, variables.clone())
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer.get("errors").is_none() || answer["data"].is_object(),
        "{answer}"
    );
    let (status, _, answer) = stack
        .graphql(&development_token, &[], query, variables)
        .await;
    assert_eq!(status, 401, "{answer}");
}
