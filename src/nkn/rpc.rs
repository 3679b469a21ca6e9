//! Seed JSON-RPC over HTTP (§2): which node should a client connect to.
//!
//! Plain `http://` only (the Go SDK's default list is plain HTTP; resi's
//! local node is too). One request per connection, HTTP/1.1, hyper client.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rand::seq::SliceRandom;
use serde_json::{json, Value};

use super::wire::NodeInfo;
use super::{NknError, Result};

/// The public NKN seed RPC servers (the default list of the Go SDK,
/// `DefaultSeedRPCServerAddr`).
pub const DEFAULT_SEED_RPC_SERVERS: &[&str] = &[
    "http://seed.nkn.org:30003",
    "http://mainnet-seed-0001.nkn.org:30003",
    "http://mainnet-seed-0002.nkn.org:30003",
    "http://mainnet-seed-0003.nkn.org:30003",
    "http://mainnet-seed-0004.nkn.org:30003",
    "http://mainnet-seed-0005.nkn.org:30003",
    "http://mainnet-seed-0006.nkn.org:30003",
    "http://mainnet-seed-0007.nkn.org:30003",
    "http://mainnet-seed-0008.nkn.org:30003",
];

/// Default timeout of one RPC call (both SDKs: 10 s).
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest RPC response body accepted.
const MAX_RESPONSE: usize = 1 << 20;

/// The JSON-RPC request body for `method` with `params`.
pub fn request_body(method: &str, params: Value) -> Value {
    json!({ "id": "resi", "jsonrpc": "2.0", "method": method, "params": params })
}

/// Interprets a JSON-RPC response: `error` (when not null) wins, then
/// `result`, otherwise the response is invalid.
pub fn parse_response(v: Value) -> Result<Value> {
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = err.get("message").and_then(Value::as_str).unwrap_or("").to_string();
        return Err(NknError::RpcServer { code, message });
    }
    match v.get("result") {
        Some(r) if !r.is_null() => Ok(r.clone()),
        _ => Err(NknError::Rpc("response has neither result nor error".into())),
    }
}

/// One JSON-RPC call by HTTP POST to `url`, bounded by `timeout`.
pub async fn call(url: &str, method: &str, params: Value, timeout: Duration) -> Result<Value> {
    tokio::time::timeout(timeout, call_inner(url, method, params))
        .await
        .map_err(|_| NknError::Rpc(format!("{url}: timeout")))?
}

async fn call_inner(url: &str, method: &str, params: Value) -> Result<Value> {
    let uri: http::Uri = url.parse().map_err(|e| NknError::Rpc(format!("{url}: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(NknError::Rpc(format!("{url}: only http:// is supported")));
    }
    let host = uri.host().ok_or_else(|| NknError::Rpc(format!("{url}: no host")))?;
    let port = uri.port_u16().unwrap_or(80);
    let host_trim = host.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((host_trim, port))
        .await
        .map_err(|e| NknError::Rpc(format!("{url}: connect: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| NknError::Rpc(format!("{url}: handshake: {e}")))?;
    let conn_task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let body = serde_json::to_vec(&request_body(method, params)).expect("serializable");
    let req = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| NknError::Rpc(e.to_string()))?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| NknError::Rpc(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(NknError::Rpc(format!("{url}: HTTP {}", resp.status())));
        }
        let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| NknError::Rpc(format!("{url}: body: {e}")))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&body).map_err(|e| NknError::Rpc(format!("{url}: json: {e}")))?;
        parse_response(v)
    }
    .await;
    conn_task.abort();
    result
}

/// `getwsaddr` for `address` on one server; requires `addr` and a valid
/// `pubkey` in the node info.
pub async fn get_ws_addr(url: &str, address: &str, timeout: Duration) -> Result<NodeInfo> {
    let r = call(url, "getwsaddr", json!({ "address": address }), timeout).await?;
    let info: NodeInfo = serde_json::from_value(r).map_err(|e| NknError::Rpc(format!("{url}: node info: {e}")))?;
    if info.addr.is_empty() {
        return Err(NknError::Rpc(format!("{url}: no address in node info")));
    }
    info.public_key()?;
    Ok(info)
}

/// `getwsaddr` on the seed servers in random order, falling back to the
/// next one on failure. Returns the last error when all fail.
pub async fn discover(servers: &[String], address: &str, timeout: Duration) -> Result<NodeInfo> {
    let mut order: Vec<&String> = servers.iter().collect();
    order.shuffle(&mut rand::rng());
    let mut last = NknError::Rpc("no seed RPC server configured".into());
    for url in order {
        match get_ws_addr(url, address, timeout).await {
            Ok(info) => return Ok(info),
            Err(e) => {
                tracing::debug!(%url, error = %e, "nkn: getwsaddr failed");
                last = e;
            }
        }
    }
    Err(last)
}

/// `getnodestate` on a node's own RPC address (`host:port`).
pub async fn get_node_state(rpc_addr: &str, timeout: Duration) -> Result<Value> {
    call(&format!("http://{rpc_addr}/"), "getnodestate", json!({}), timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        assert_eq!(parse_response(json!({"jsonrpc":"2.0","id":"x","result":{"a":1}})).unwrap(), json!({"a":1}));
        match parse_response(json!({"error":{"code":-42001,"message":"INVALID METHOD"}})) {
            Err(NknError::RpcServer { code, message }) => assert_eq!((code, message.as_str()), (-42001, "INVALID METHOD")),
            other => panic!("{other:?}"),
        }
        assert!(parse_response(json!({"error":null,"result":"ok"})).is_ok());
        assert!(parse_response(json!({})).is_err());
        let b = request_body("getwsaddr", json!({"address":"a"}));
        assert_eq!(b["method"], "getwsaddr");
        assert_eq!(b["params"]["address"], "a");
        assert_eq!(b["jsonrpc"], "2.0");
    }

    #[tokio::test]
    async fn refused_and_unsupported() {
        // A closed port on loopback: the call fails fast.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = discover(&[format!("http://127.0.0.1:{port}")], "x", Duration::from_secs(2)).await;
        assert!(e.is_err());
        assert!(call("https://127.0.0.1:1/", "m", json!({}), Duration::from_secs(1)).await.is_err());
        assert!(discover(&[], "x", Duration::from_secs(1)).await.is_err());
    }
}
