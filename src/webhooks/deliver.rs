//! Sending one delivery: the target checked after DNS resolution (no loopback, private,
//! link-local or other internal address unless the operator allows it), the connection pinned
//! to the checked address (no DNS rebinding between the check and the request), no redirects,
//! a short timeout, and the body signed with the webhook's secret.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::store::{Attempt, PendingDelivery};

/// How long a receiver has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The operator's webhook settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct WebhookSettings {
    /// `WEBHOOK_ALLOW_PRIVATE`: deliver to loopback, private and link-local addresses too (a
    /// receiver on the same machine or network; never on a server strangers can sign up to).
    pub allow_private: bool,
}

/// Why a target is not sent to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the webhook URL is not a valid http(s) URL")]
    BadUrl,
    #[error("{host} does not resolve: {reason}")]
    Unresolved { host: String, reason: String },
    #[error(
        "refused: {host} resolves to {address}, a loopback, private or link-local address \
         (the operator can allow these with WEBHOOK_ALLOW_PRIVATE)"
    )]
    Internal { host: String, address: IpAddr },
}

/// Addresses a webhook may never reach unless allowed: this machine, private networks,
/// link-local (cloud metadata at 169.254.169.254), carrier-grade NAT, and the unroutable.
fn is_internal(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first == 0x0064 && v6.segments()[1] == 0xff9b) // NAT64 64:ff9b::/96
                || first == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
        }
    }
}

fn is_internal_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64.0.0/10
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18.0.0/15
        || a >= 240 // reserved
}

/// Resolves the URL's host and checks every address; the one to connect to.
pub async fn check_target(
    url: &str,
    settings: WebhookSettings,
) -> Result<(String, SocketAddr), TargetError> {
    let parsed = url::Url::parse(url).map_err(|_| TargetError::BadUrl)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(TargetError::BadUrl);
    }
    let host = parsed.host_str().ok_or(TargetError::BadUrl)?.to_owned();
    let port = parsed.port_or_known_default().ok_or(TargetError::BadUrl)?;
    let lookup_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((lookup_host.as_str(), port))
        .await
        .map_err(|e| TargetError::Unresolved {
            host: host.clone(),
            reason: e.to_string(),
        })?
        .collect();
    let first = *addresses.first().ok_or_else(|| TargetError::Unresolved {
        host: host.clone(),
        reason: "no addresses".into(),
    })?;
    if !settings.allow_private {
        // Every address, not only the first: a resolver may answer them in any order.
        if let Some(bad) = addresses.iter().find(|a| is_internal(a.ip())) {
            return Err(TargetError::Internal {
                host,
                address: bad.ip(),
            });
        }
    }
    Ok((lookup_host, first))
}

type HmacSha256 = Hmac<Sha256>;

/// `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// What a receiver does: the signature matches the body and is at most `tolerance` old.
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64, tolerance: Duration) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", s)) => signatures.extend(hex::decode(s).ok()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return false;
    }
    signatures.iter().any(|signature| {
        let mut mac =
            HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        // Constant-time comparison.
        mac.verify_slice(signature).is_ok()
    })
}

/// One attempt at sending `delivery`.
pub async fn deliver(delivery: &PendingDelivery, settings: WebhookSettings) -> Attempt {
    let (host, address) = match check_target(&delivery.url, settings).await {
        Ok(target) => target,
        Err(e @ TargetError::Unresolved { .. }) => {
            return Attempt::Failed {
                status: None,
                error: e.to_string(),
                retry: true,
            };
        }
        Err(e) => {
            return Attempt::Failed {
                status: None,
                error: e.to_string(),
                retry: false,
            };
        }
    };
    let client = match reqwest::Client::builder()
        .resolve(&host, address)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .user_agent(concat!(
            "lora-pipeline-webhooks/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            return Attempt::Failed {
                status: None,
                error: format!("could not build the HTTP client: {e}"),
                retry: true,
            };
        }
    };
    let body = delivery.payload.to_string().into_bytes();
    let timestamp = Utc::now().timestamp();
    let response = client
        .post(&delivery.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Lora-Pipeline-Event", delivery.event.as_str())
        .header("Lora-Pipeline-Delivery", delivery.id.to_string())
        .header(
            "Lora-Pipeline-Signature",
            sign(&delivery.secret, timestamp, &body),
        )
        .body(body)
        .send()
        .await;
    match response {
        Ok(response) if response.status().is_success() => Attempt::Delivered {
            status: response.status().as_u16(),
        },
        Ok(response) => Attempt::Failed {
            status: Some(response.status().as_u16()),
            error: format!("the receiver answered {}", response.status()),
            retry: true,
        },
        Err(e) => Attempt::Failed {
            status: None,
            error: if e.is_timeout() {
                format!("no answer within {} s", TIMEOUT.as_secs())
            } else {
                format!("could not connect: {e}")
            },
            retry: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn loopback_targets_are_refused_after_resolution_unless_allowed() {
        let refused = check_target("http://localhost:9/hook", WebhookSettings::default()).await;
        assert!(
            matches!(refused, Err(TargetError::Internal { ref host, .. }) if host == "localhost"),
            "{refused:?}"
        );
        let refused = check_target("http://[::1]:9/hook", WebhookSettings::default()).await;
        assert!(
            matches!(refused, Err(TargetError::Internal { .. })),
            "{refused:?}"
        );
        let allowed = check_target(
            "http://127.0.0.1:9/hook",
            WebhookSettings {
                allow_private: true,
            },
        )
        .await;
        assert_eq!(allowed.unwrap().1, "127.0.0.1:9".parse().unwrap());
    }

    #[tokio::test]
    async fn a_delivery_to_an_internal_host_is_refused_at_delivery_time_for_good() {
        let delivery = PendingDelivery {
            id: uuid::Uuid::nil(),
            user_id: uuid::Uuid::nil(),
            event: super::super::WebhookEvent::Ping,
            // Saved when it resolved elsewhere; resolves to loopback now.
            url: "http://localhost:9/hook".into(),
            secret: "whsec_test".into(),
            payload: serde_json::json!({}),
            attempts: 0,
        };
        match deliver(&delivery, WebhookSettings::default()).await {
            Attempt::Failed {
                status: None,
                error,
                retry: false,
            } => assert!(error.contains("WEBHOOK_ALLOW_PRIVATE"), "{error}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn signatures_verify_and_expire() {
        let body = br#"{"id":"x"}"#;
        let header = sign("whsec_test", 1_700_000_000, body);
        let tolerance = Duration::from_secs(300);
        assert!(verify(
            "whsec_test",
            &header,
            body,
            1_700_000_100,
            tolerance
        ));
        assert!(!verify(
            "whsec_other",
            &header,
            body,
            1_700_000_100,
            tolerance
        ));
        assert!(!verify(
            "whsec_test",
            &header,
            b"{}",
            1_700_000_100,
            tolerance
        ));
        assert!(!verify(
            "whsec_test",
            &header,
            body,
            1_700_001_000,
            tolerance
        ));
        assert!(!verify(
            "whsec_test",
            "v1=00",
            body,
            1_700_000_000,
            tolerance
        ));
    }
}
