//! `host:port` to socket addresses, and connecting to the first that
//! accepts.
//!
//! A static glibc binary cannot resolve names through `getaddrinfo` in an
//! image without NSS libraries (`FROM scratch`), so names go through
//! `hickory-resolver`, which reads `/etc/hosts` (Docker writes it) and then
//! asks the name servers of `/etc/resolv.conf` (Docker's embedded DNS, for
//! compose service names) itself. Nothing is cached here: every call
//! rereads both files and asks again, so a server that comes back under a
//! new address is found on the next connection attempt.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use tokio::net::TcpStream;

use crate::{KvsError, Result};

/// The addresses `addr` names, in the order to try them.
///
/// `addr` is `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`. Literal addresses are
/// returned as they are, without any lookup.
pub async fn resolve(addr: &str) -> Result<Vec<SocketAddr>> {
    if let Ok(literal) = addr.parse::<SocketAddr>() {
        return Ok(vec![literal]);
    }
    let (host, port) = split_host_port(addr)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let resolver = TokioResolver::builder_tokio()
        .and_then(|builder| builder.build())
        .map_err(|e| {
            KvsError::InvalidInput(format!(
                "cannot resolve `{host}`: no usable resolver configuration \
                 (/etc/resolv.conf): {e}"
            ))
        })?;
    let ips = resolver
        .lookup_ip(host)
        .await
        .map_err(|e| KvsError::InvalidInput(format!("cannot resolve `{host}`: {e}")))?;
    let found: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(ip, port)).collect();
    if found.is_empty() {
        return Err(KvsError::InvalidInput(format!(
            "cannot resolve `{host}`: no addresses"
        )));
    }
    Ok(found)
}

/// Resolves `addr` now and connects to the first of its addresses that
/// accepts, with `TCP_NODELAY` set. The error names `addr` and, when it
/// was a name, every address tried.
pub async fn connect(addr: &str) -> Result<TcpStream> {
    let candidates = resolve(addr).await?;
    let mut failures = Vec::new();
    for candidate in &candidates {
        match TcpStream::connect(candidate).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => failures.push((candidate, e)),
        }
    }
    // `resolve` never returns an empty list, so there is a last failure.
    let kind = failures
        .last()
        .map_or(std::io::ErrorKind::NotFound, |(_, e)| e.kind());
    let detail = match failures.as_slice() {
        [(only, e)] if only.to_string() == addr => e.to_string(),
        _ => failures
            .iter()
            .map(|(a, e)| format!("{a}: {e}"))
            .collect::<Vec<_>>()
            .join("; "),
    };
    Err(KvsError::Io(std::io::Error::new(
        kind,
        format!("cannot connect to {addr}: {detail}"),
    )))
}

/// `HOST:PORT` or `[HOST]:PORT` split at the last colon.
fn split_host_port(addr: &str) -> Result<(&str, u16)> {
    let bad = |why: &str| {
        KvsError::InvalidInput(format!(
            "bad address `{addr}`: {why} (expected HOST:PORT, e.g. localhost:4000, \
             127.0.0.1:4000 or [::1]:4000)"
        ))
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(|| bad("unclosed `[`"))?,
        None if host.contains(':') => return Err(bad("an IPv6 address needs brackets")),
        None => host,
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_split() {
        assert_eq!(split_host_port("kvs:4000").unwrap(), ("kvs", 4000));
        assert_eq!(split_host_port("[::1]:4000").unwrap(), ("::1", 4000));
        assert_eq!(
            split_host_port("[fe80::1%eth0]:1").unwrap(),
            ("fe80::1%eth0", 1)
        );
        for bad in [
            "kvs",
            "kvs:",
            "kvs:99999",
            ":4000",
            "::1:4000",
            "[::1:4000",
            "[]:4000",
        ] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn literals_and_localhost() {
        assert_eq!(
            resolve("127.0.0.1:4000").await.unwrap(),
            ["127.0.0.1:4000".parse().unwrap()]
        );
        assert_eq!(
            resolve("[::1]:4000").await.unwrap(),
            ["[::1]:4000".parse().unwrap()]
        );
        let local = resolve("localhost:4000").await.unwrap();
        assert!(!local.is_empty());
        assert!(
            local
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 4000),
            "{local:?}"
        );
        let err = resolve("no-such-host.invalid.:1").await.unwrap_err();
        assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
    }
}
