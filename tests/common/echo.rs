//! Test ESI/Echo servers and clients (tonic).
//!
//! - [`start_echo`]: a tonic server with the `resitest.Echo` service (all
//!   four RPC shapes) and, optionally, an `esi.Esi` service whose `Modify`
//!   answers the extension ids it knows with a marker (so forwarding is
//!   visible) and refuses the others like any hop would.
//! - `Echo` conventions (field `note` of the request):
//!   - `x-…` request metadata is echoed back in the response headers;
//!   - `"error"`: fail with code `count` (unary), or after `count` replies
//!     (server stream), with details = `body` and trailing metadata
//!     `x-trailer: yes` and `x-trailer-bin: [1,2,3]`;
//!   - `"slow:MS"`: sleep MS milliseconds before answering (unary) or
//!     between replies (server stream);
//!   - `"hang"`: never answer; counts the call in `cancelled` when dropped;
//!   - `"grow:N"`: answer with a body of N bytes (unary), or send replies
//!     after the first with N-byte bodies (server stream).
//! - Client helpers with message size limits raised for 16 MiB tests.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::{KeyAndValueRef, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/test/resitest.rs"));
}

pub mod esi_pb {
    include!(concat!(env!("OUT_DIR"), "/test/esi.rs"));
}

pub use esi_pb::esi_client::EsiClient;
pub use esi_pb::{Extension, ModifyRequest, ModifyResponse};
pub use pb::echo_client::EchoClient;
pub use pb::Msg;

/// Message size limit of the test servers and clients.
pub const MAX_MSG: usize = 64 << 20;
/// Prefix the test Esi server puts in front of the `data` it echoes.
pub const ESI_MARKER: &[u8] = b"esi-server:";

/// Counters a test can watch.
#[derive(Default)]
pub struct Counters {
    /// `Modify` calls that reached the Esi server.
    pub modify_calls: AtomicUsize,
    /// Echo calls started (any shape).
    pub echo_calls: AtomicUsize,
    /// `hang` calls whose handler was dropped (the call was cancelled).
    pub cancelled: AtomicUsize,
    /// Client-stream calls that ended before their request stream did
    /// (reset by the client or a hop: the handler failed or was dropped).
    pub broken_streams: AtomicUsize,
}

/// A running tonic test server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Stops the server and waits until it has stopped (its port is free).
    pub async fn stop(mut self) {
        self.halt().await;
    }

    async fn halt(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(mut t) = self.task.take() {
            // Calls still in flight may hold it up: cut them after a while.
            if tokio::time::timeout(Duration::from_secs(2), &mut t).await.is_err() {
                t.abort();
                let _ = t.await;
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// What the test server offers.
#[derive(Clone, Default)]
pub struct ServerOpts {
    /// Also serve `esi.Esi`, answering these extension ids.
    pub esi_known: Option<Vec<u32>>,
}

/// An Echo server (no Esi service) on a free port.
pub async fn start_echo() -> TestServer {
    start_server(bind_free().await, ServerOpts::default()).await
}

/// An Echo + Esi server on a free port; the Esi service knows `known`.
pub async fn start_echo_esi(known: &[u32]) -> TestServer {
    start_server(bind_free().await, ServerOpts { esi_known: Some(known.to_vec()) }).await
}

/// An Echo server on a given address (to restart one on the same port).
pub async fn start_echo_at(addr: SocketAddr) -> TestServer {
    let mut tries = 0;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if tries < 50 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    };
    start_server(listener, ServerOpts::default()).await
}

async fn bind_free() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind test server")
}

/// A free local port (bound, then released).
pub async fn free_addr() -> SocketAddr {
    bind_free().await.local_addr().unwrap()
}

async fn start_server(listener: TcpListener, opts: ServerOpts) -> TestServer {
    let addr = listener.local_addr().unwrap();
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let echo = pb::echo_server::EchoServer::new(EchoSvc { counters: counters.clone() })
        .max_decoding_message_size(MAX_MSG)
        .max_encoding_message_size(MAX_MSG);
    let mut builder = Server::builder()
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .tcp_nodelay(true);
    let mut router = builder.add_service(echo);
    if let Some(known) = opts.esi_known {
        let esi = esi_pb::esi_server::EsiServer::new(EsiSvc {
            known: known.into_iter().collect(),
            counters: counters.clone(),
        });
        router = router.add_service(esi);
    }
    // `Server::tcp_nodelay` applies to tonic's own listener only: an
    // incoming stream of ours must set it on each connection, or a reply's
    // trailers wait behind its DATA for the caller's delayed ACK (Nagle).
    let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |conn| {
        conn.inspect(|tcp| {
            let _ = tcp.set_nodelay(true);
        })
    });
    let task = tokio::spawn(async move {
        let _ = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            })
            .await;
    });
    TestServer { addr, counters, stop: Some(stop_tx), task: Some(task) }
}

/// A tonic channel to `addr` (h2c), flow windows and limits raised.
pub async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

pub async fn echo_client(addr: SocketAddr) -> EchoClient<Channel> {
    EchoClient::new(channel(addr).await).max_decoding_message_size(MAX_MSG).max_encoding_message_size(MAX_MSG)
}

pub async fn esi_client(addr: SocketAddr) -> EsiClient<Channel> {
    EsiClient::new(channel(addr).await).max_decoding_message_size(MAX_MSG).max_encoding_message_size(MAX_MSG)
}

/// A Modify request for one extension.
pub fn modify_req(id: u32, pass: bool, data: &[u8]) -> ModifyRequest {
    ModifyRequest { ext: Some(Extension { id, pass, data: Bytes::copy_from_slice(data) }) }
}

/// FNV-1a, to check big payloads arrived intact without echoing them.
pub fn fnv(data: &[u8], mut h: u64) -> u64 {
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}
pub const FNV_START: u64 = 0xcbf29ce484222325;

/// `len` bytes of a recognisable pattern.
pub fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>().into()
}

fn echo_metadata(from: &MetadataMap, to: &mut MetadataMap) {
    for kv in from.iter() {
        match kv {
            KeyAndValueRef::Ascii(k, v) if k.as_str().starts_with("x-") => {
                to.insert(k.clone(), v.clone());
            }
            KeyAndValueRef::Binary(k, v) if k.as_str().starts_with("x-") => {
                to.insert_bin(k.clone(), v.clone());
            }
            _ => {}
        }
    }
}

/// The status an `"error"` request asks for.
pub fn error_status(code: u32, details: Bytes) -> Status {
    let mut md = MetadataMap::new();
    md.insert("x-trailer", MetadataValue::from_static("yes"));
    md.insert_bin("x-trailer-bin", MetadataValue::from_bytes(&[1, 2, 3]));
    Status::with_details_and_metadata(tonic::Code::from(code as i32), ERROR_MESSAGE, details, md)
}
/// Message of error statuses: non-ASCII and `%` test the percent-encoding.
pub const ERROR_MESSAGE: &str = "deliberate failure: 50% ünïcødé\nsecond line";

struct EchoSvc {
    counters: Arc<Counters>,
}

fn slow_ms(note: &str) -> Option<u64> {
    note.strip_prefix("slow:").and_then(|s| s.parse().ok())
}

fn grow_len(note: &str) -> Option<usize> {
    note.strip_prefix("grow:").and_then(|s| s.parse().ok())
}

/// Counts a client stream in `broken_streams` unless it is finished.
struct Unfinished(Option<Arc<Counters>>);
impl Unfinished {
    fn finish(mut self) {
        self.0 = None;
    }
}
impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.broken_streams.fetch_add(1, Ordering::SeqCst);
        }
    }
}

struct CountOnDrop(Arc<Counters>);
impl Drop for CountOnDrop {
    fn drop(&mut self) {
        self.0.cancelled.fetch_add(1, Ordering::SeqCst);
    }
}

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::echo_server::Echo for EchoSvc {
    async fn unary(&self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        self.counters.echo_calls.fetch_add(1, Ordering::SeqCst);
        let mut md = MetadataMap::new();
        echo_metadata(req.metadata(), &mut md);
        let msg = req.into_inner();
        if msg.note == "error" {
            return Err(error_status(msg.count, msg.body));
        }
        if msg.note == "hang" {
            let _guard = CountOnDrop(self.counters.clone());
            std::future::pending::<()>().await;
        }
        if let Some(ms) = slow_ms(&msg.note) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let mut msg = msg;
        if let Some(n) = grow_len(&msg.note) {
            msg.body = pattern(n, 1);
        }
        let mut rsp = Response::new(msg);
        *rsp.metadata_mut() = md;
        Ok(rsp)
    }

    async fn client_stream(&self, req: Request<Streaming<Msg>>) -> Result<Response<Msg>, Status> {
        self.counters.echo_calls.fetch_add(1, Ordering::SeqCst);
        let mut md = MetadataMap::new();
        echo_metadata(req.metadata(), &mut md);
        let mut stream = req.into_inner();
        let (mut count, mut total, mut hash) = (0u32, 0usize, FNV_START);
        let unfinished = Unfinished(Some(self.counters.clone()));
        while let Some(m) = stream.message().await? {
            count += 1;
            total += m.body.len();
            hash = fnv(&m.body, hash);
        }
        unfinished.finish();
        let mut rsp = Response::new(Msg { body: Bytes::new(), count, note: format!("{total}:{hash:x}") });
        *rsp.metadata_mut() = md;
        Ok(rsp)
    }

    type ServerStreamStream = MsgStream;

    async fn server_stream(&self, req: Request<Msg>) -> Result<Response<MsgStream>, Status> {
        self.counters.echo_calls.fetch_add(1, Ordering::SeqCst);
        let mut md = MetadataMap::new();
        echo_metadata(req.metadata(), &mut md);
        let msg = req.into_inner();
        let pause = slow_ms(&msg.note).map(Duration::from_millis);
        let fail = msg.note == "error";
        let count = msg.count;
        let body = msg.body.clone();
        let later = grow_len(&msg.note).map(|n| pattern(n, 2)).unwrap_or_else(|| body.clone());
        let stream = async_stream(count, (body, later), pause, fail);
        let mut rsp = Response::new(stream);
        *rsp.metadata_mut() = md;
        Ok(rsp)
    }

    type BidiStream = MsgStream;

    async fn bidi(&self, req: Request<Streaming<Msg>>) -> Result<Response<MsgStream>, Status> {
        self.counters.echo_calls.fetch_add(1, Ordering::SeqCst);
        let mut md = MetadataMap::new();
        echo_metadata(req.metadata(), &mut md);
        let stream = req.into_inner().map(|r| r.map(|m| Msg { body: m.body, count: m.count, note: m.note }));
        let mut rsp = Response::new(Box::pin(stream) as MsgStream);
        *rsp.metadata_mut() = md;
        Ok(rsp)
    }
}

/// `count` replies (index in `count`; the first with `bodies.0`, the others
/// with `bodies.1`), optional pause between them, then an error status if
/// `fail`.
fn async_stream(count: u32, bodies: (Bytes, Bytes), pause: Option<Duration>, fail: bool) -> MsgStream {
    let (first, body) = bodies;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for i in 0..count {
            if let Some(p) = pause {
                tokio::time::sleep(p).await;
            }
            let body = if i == 0 { first.clone() } else { body.clone() };
            if tx.send(Ok(Msg { body, count: i, note: String::new() })).await.is_err() {
                return;
            }
        }
        if fail {
            let _ = tx.send(Err(error_status(tonic::Code::Aborted as u32, body))).await;
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

struct EsiSvc {
    known: HashSet<u32>,
    counters: Arc<Counters>,
}

#[tonic::async_trait]
impl esi_pb::esi_server::Esi for EsiSvc {
    async fn modify(&self, req: Request<ModifyRequest>) -> Result<Response<ModifyResponse>, Status> {
        self.counters.modify_calls.fetch_add(1, Ordering::SeqCst);
        let Some(ext) = req.into_inner().ext else {
            return Err(Status::invalid_argument("ModifyRequest without ext"));
        };
        if !self.known.contains(&ext.id) {
            // The last hop: nowhere to pass an unknown extension to.
            return Err(Status::unimplemented(format!(
                "extension {} is not implemented at this hop (pass={})",
                ext.id, ext.pass
            )));
        }
        let mut data = ESI_MARKER.to_vec();
        data.extend_from_slice(&ext.data);
        Ok(Response::new(ModifyResponse { ext: Some(Extension { id: ext.id, pass: ext.pass, data: data.into() }) }))
    }
}
