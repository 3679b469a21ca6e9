//! RESI paths over NKN.
//!
//! A gateway with an NKN identity runs one [`NknEndpoint`]: a
//! [`MultiClient`] plus a demultiplexer. Every NKN message between two
//! gateways carries one or more complete path frames (no preface: the
//! first message of a path is its HELLO). Messages from a peer address go
//! to that peer's path; a HELLO from an address starts (or restarts) its
//! path through the session registry, and a HELLO_REPLY completes a dial.
//! NKN may lose, duplicate or reorder messages, so the session treats these
//! paths as lossy (retransmission by timeout, reorder buffers), and the
//! acceptor answers a repeated HELLO with the reply it already gave, so a
//! lost reply does not burn the dialler's cookie.
//!
//! `[Nkn] AllowedPeers` limits who may open or join paths: a HELLO from an
//! address not on the list is dropped unanswered (logged at debug and
//! counted, [`NknEndpoint::refused_hellos`]); with no list, any address may.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{HelloAcceptor, HelloFn, MessagePath, NewPath, PathDialer, PathError};
use crate::frame::Frame;
use crate::nkn::{Identity, MultiClient, MultiClientConfig, Received, SendOptions};
use crate::tls::ChannelBinding;

/// Largest RESI message put in one NKN message (NKN carries up to ~4 MB;
/// smaller messages lose less when one is dropped).
pub const NKN_MTU: usize = 1 << 20;
/// Messages buffered per path in each direction.
const PATH_QUEUE: usize = 256;
/// How long a HELLO's reply is remembered for a repeated HELLO.
const HELLO_CACHE_TTL: Duration = Duration::from_secs(30);

enum Route {
    /// Arrivals from this peer belong to a path.
    Path(mpsc::Sender<Bytes>),
    /// A dial to this peer waits for its HELLO_REPLY.
    AwaitReply(oneshot::Sender<Bytes>),
}

/// This gateway's presence on NKN.
pub struct NknEndpoint {
    client: Arc<MultiClient>,
    routes: Mutex<HashMap<String, Route>>,
    hello_cache: Mutex<HashMap<(String, Bytes), (Bytes, Instant)>>,
    registry: Option<Arc<dyn HelloAcceptor>>,
    /// Addresses (lower case) whose HELLOs are answered; empty: any.
    allowed: HashSet<String>,
    refused_hellos: AtomicU64,
    receiver: Mutex<Option<JoinHandle<()>>>,
}

impl NknEndpoint {
    /// Connects the MultiClient and starts routing arrivals. With a
    /// registry, HELLOs from other gateways are accepted as paths: from
    /// any address, or only from those in `allowed_peers` when it is not
    /// empty.
    pub fn start<A: HelloAcceptor>(
        identity: Identity,
        config: MultiClientConfig,
        registry: Option<A>,
        allowed_peers: &[String],
    ) -> Arc<NknEndpoint> {
        let registry = registry.map(|r| Arc::new(r) as Arc<dyn HelloAcceptor>);
        let (client, arrivals) = MultiClient::new(identity, config);
        let endpoint = Arc::new(NknEndpoint {
            client: Arc::new(client),
            routes: Mutex::new(HashMap::new()),
            hello_cache: Mutex::new(HashMap::new()),
            registry,
            allowed: allowed_peers.iter().map(|p| p.to_ascii_lowercase()).collect(),
            refused_hellos: AtomicU64::new(0),
            receiver: Mutex::new(None),
        });
        let task = tokio::spawn(route_arrivals(Arc::downgrade(&endpoint), arrivals));
        *endpoint.receiver.lock().expect("receiver lock") = Some(task);
        endpoint
    }

    /// This endpoint's NKN address (what the peer puts in `[Nkn] Address`).
    pub fn address(&self) -> &str {
        self.client.address()
    }

    /// HELLOs dropped because their sender is not in `[Nkn] AllowedPeers`.
    pub fn refused_hellos(&self) -> u64 {
        self.refused_hellos.load(Ordering::Relaxed)
    }

    /// The underlying MultiClient.
    pub fn client(&self) -> &MultiClient {
        &self.client
    }

    /// Stops receiving and closes the MultiClient.
    pub fn close(&self) {
        if let Some(task) = self.receiver.lock().expect("receiver lock").take() {
            task.abort();
        }
        self.routes.lock().expect("routes lock").clear();
        self.client.close();
    }

    /// A path over NKN: channels the session uses, and a task that sends
    /// its messages to `peer`.
    fn open_path(self: &Arc<Self>, peer: &str) -> MessagePath {
        let (in_tx, in_rx) = mpsc::channel(PATH_QUEUE);
        let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(PATH_QUEUE);
        self.routes.lock().expect("routes lock").insert(peer.to_string(), Route::Path(in_tx));
        let endpoint = Arc::downgrade(self);
        let peer = peer.to_string();
        tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                let Some(endpoint) = endpoint.upgrade() else { return };
                let opts = SendOptions { no_reply: true, ..SendOptions::default() };
                if let Err(e) = endpoint.client.send(&[peer.as_str()], msg, opts).await {
                    // A lost message is the session's to recover.
                    tracing::debug!(%peer, error = %e, "NKN send failed");
                }
            }
        });
        MessagePath { tx: out_tx, rx: in_rx, mtu: NKN_MTU }
    }

    async fn send_frame(&self, peer: &str, frame: Frame) {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        let opts = SendOptions { no_reply: true, ..SendOptions::default() };
        if let Err(e) = self.client.send(&[peer], buf.freeze(), opts).await {
            tracing::debug!(%peer, error = %e, "NKN send failed");
        }
    }

    /// A HELLO from `peer`: answer it (from the cache if it is a repeat)
    /// and, if accepted, route the peer's messages to the new path.
    async fn on_hello(self: &Arc<Self>, peer: &str, hello: Bytes) {
        let Some(registry) = self.registry.clone() else { return };
        if !self.allowed.is_empty() && !self.allowed.contains(peer) {
            self.refused_hellos.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "HELLO from an NKN address not in [Nkn] AllowedPeers dropped");
            return;
        }
        let key = (peer.to_string(), hello.clone());
        let cached = {
            let mut cache = self.hello_cache.lock().expect("hello cache lock");
            let now = Instant::now();
            cache.retain(|_, (_, at)| now.duration_since(*at) < HELLO_CACHE_TTL);
            cache.get(&key).map(|(reply, _)| reply.clone())
        };
        if let Some(reply) = cached {
            self.send_frame(peer, Frame::HelloReply(reply)).await;
            return;
        }
        let (reply, sink) = registry.accept_hello(hello, &ChannelBinding::default(), None);
        self.hello_cache.lock().expect("hello cache lock").insert(key, (reply.clone(), Instant::now()));
        self.send_frame(peer, Frame::HelloReply(reply)).await;
        if let Some(sink) = sink {
            sink(self.open_path(peer).into());
        }
    }
}

impl Drop for NknEndpoint {
    fn drop(&mut self) {
        self.client.close();
    }
}

/// Routes every arrival to its path, dial or handshake.
async fn route_arrivals(endpoint: std::sync::Weak<NknEndpoint>, mut arrivals: mpsc::Receiver<Received>) {
    while let Some(msg) = arrivals.recv().await {
        let Some(endpoint) = endpoint.upgrade() else { return };
        let peer = msg.src.to_ascii_lowercase();
        match first_frame(&msg.data) {
            Some(Frame::Hello(hello)) => endpoint.on_hello(&peer, hello).await,
            Some(Frame::HelloReply(reply)) => {
                let waiting = endpoint.routes.lock().expect("routes lock").remove(&peer);
                match waiting {
                    Some(Route::AwaitReply(tx)) => {
                        let _ = tx.send(reply);
                    }
                    Some(route) => {
                        // A late duplicate reply: keep the path's route.
                        endpoint.routes.lock().expect("routes lock").insert(peer, route);
                    }
                    None => {}
                }
            }
            Some(_) => {
                let route = match endpoint.routes.lock().expect("routes lock").get(&peer) {
                    Some(Route::Path(tx)) => Some(tx.clone()),
                    _ => None,
                };
                if let Some(tx) = route {
                    // Full or closed: drop it; the session retransmits.
                    let _ = tx.try_send(msg.data);
                }
            }
            None => tracing::debug!(%peer, "NKN message without a RESI frame ignored"),
        }
    }
}

fn first_frame(data: &Bytes) -> Option<Frame> {
    let mut buf = BytesMut::from(&data[..]);
    Frame::decode(&mut buf, NKN_MTU + 1024).ok().flatten()
}

/// Dials the next gateway's NKN address.
pub struct NknDialer {
    pub endpoint: Arc<NknEndpoint>,
    /// The peer's NKN address (`[Nkn] Address`).
    pub peer: String,
}

impl PathDialer for NknDialer {
    fn describe(&self) -> String {
        format!("nkn:{}", self.peer)
    }

    fn dial(&self, hello: HelloFn, timeout: Duration) -> BoxFuture<'static, Result<(NewPath, Bytes), PathError>> {
        // NKN paths are end-to-end encrypted by NKN itself; nothing to bind to.
        let hello = hello(&ChannelBinding::default());
        let endpoint = self.endpoint.clone();
        let peer = self.peer.to_ascii_lowercase();
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            endpoint.routes.lock().expect("routes lock").insert(peer.clone(), Route::AwaitReply(tx));
            let attempt = async {
                endpoint.client.wait_ready(timeout).await.map_err(|_| PathError::Timeout(timeout))?;
                endpoint.send_frame(&peer, Frame::Hello(hello)).await;
                rx.await.map_err(|_| PathError::Closed)
            };
            let reply = match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(PathError::Timeout(timeout)),
            };
            let path = endpoint.open_path(&peer);
            Ok((path.into(), reply))
        })
    }
}
