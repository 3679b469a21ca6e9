//! The SolarNetwork ESI dialect in Rust: a tonic `DerFacilityService` built
//! on the crate's messages (`resi::proto::solarnetwork::esi::domain`), called
//! by a tonic client through a resi gateway in all four RPC shapes.

use std::pin::Pin;
use std::time::Duration;

use resi::config::{Config, ResiConfig, TcpConfig};
use resi::gateway::Gateway;
use resi::proto::solarnetwork::esi::domain::{
    price_map_offer_response::AcceptOneof, DatumRequest, DerFacilityRegistration, DerRoute, PowerComponents,
    PowerParameters, PowerProfileDatum, PriceDatum, PriceMap, PriceMapOffer, PriceMapOfferFeedback,
    PriceMapOfferFeedbackResponse, PriceMapOfferResponse, PriceMapOfferStatus, PriceMapOfferStatusRequest,
    PriceParameters, SignedInt32Range, TimeUnit, Uuid,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

mod service {
    include!(concat!(env!("OUT_DIR"), "/test/solarnetwork.esi.service.rs"));
}
use service::der_facility_service_client::DerFacilityServiceClient;
use service::der_facility_service_server::{DerFacilityService, DerFacilityServiceServer};

type Replies<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Answers computed from the requests; counters above 10 units.
struct Facility;

fn units(map: &PriceMap) -> i64 {
    map.price.as_ref().and_then(|p| p.apparent_energy_price.as_ref()).map_or(0, |m| m.units)
}

#[tonic::async_trait]
impl DerFacilityService for Facility {
    type ProposePriceMapOfferStream = Replies<PriceMapOfferResponse>;
    type ListPowerProfileStream = Replies<PowerProfileDatum>;

    async fn complete_der_facility_registration(&self, _: Request<DerFacilityRegistration>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn propose_price_map_offer(
        &self,
        request: Request<Streaming<PriceMapOffer>>,
    ) -> Result<Response<Self::ProposePriceMapOfferStream>, Status> {
        let mut offers = request.into_inner();
        let replies = async_stream_like(move |tx| async move {
            while let Some(offer) = offers.next().await {
                let offer = offer?;
                let map = offer.price_map.unwrap_or_default();
                let accept = if units(&map) > 10 {
                    let mut counter = map.clone();
                    counter.price.get_or_insert_default().apparent_energy_price.get_or_insert_default().units = 10;
                    AcceptOneof::CounterOffer(counter)
                } else {
                    AcceptOneof::Accept(true)
                };
                let done = matches!(accept, AcceptOneof::Accept(_));
                let reply = PriceMapOfferResponse { route: None, offer_id: offer.offer_id, accept_oneof: Some(accept) };
                if tx.send(Ok(reply)).await.is_err() || done {
                    break;
                }
            }
            Ok(())
        });
        Ok(Response::new(replies))
    }

    async fn get_price_map_offer_status(&self, _: Request<PriceMapOfferStatusRequest>) -> Result<Response<PriceMapOfferStatus>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn provide_price_map_offer_feedback(
        &self,
        _: Request<PriceMapOfferFeedback>,
    ) -> Result<Response<PriceMapOfferFeedbackResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn provide_prices(&self, request: Request<Streaming<PriceDatum>>) -> Result<Response<()>, Status> {
        let prices: Vec<PriceDatum> = request.into_inner().collect::<Result<_, _>>().await?;
        let lengths: Vec<u32> = prices.iter().map(|p| p.time_length).collect();
        if lengths != [0, 1, 2] {
            return Err(Status::invalid_argument(format!("got {lengths:?}")));
        }
        Ok(Response::new(()))
    }

    async fn list_power_profile(&self, request: Request<DatumRequest>) -> Result<Response<Self::ListPowerProfileStream>, Status> {
        let req = request.into_inner();
        let items = (0..req.time_unit_coalescence).map(move |i| {
            Ok(PowerProfileDatum {
                ts: None,
                time_length: i,
                time_unit: req.time_unit,
                power_components: Some(PowerComponents { real_power: -i64::from(i), reactive_power: 0 }),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn get_power_parameters(&self, request: Request<DerRoute>) -> Result<Response<PowerParameters>, Status> {
        let route = request.into_inner();
        let span = SignedInt32Range { min: route.exchange_uid.len() as i32, max: route.facility_uid.len() as i32 };
        Ok(Response::new(PowerParameters { voltage_range: Some(span), power_factor_range: None, frequency_range: None }))
    }

    async fn set_power_parameters(&self, _: Request<PowerParameters>) -> Result<Response<PowerParameters>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn get_price_parameters(&self, _: Request<DerRoute>) -> Result<Response<PriceParameters>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// A response stream fed by a task (no extra crate for `async-stream`).
fn async_stream_like<T, F, Fut>(body: F) -> Replies<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = Result<(), Status>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let errors = tx.clone();
    let work = body(tx);
    tokio::spawn(async move {
        if let Err(status) = work.await {
            let _ = errors.send(Err(status)).await;
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

fn offer(hi: u64, units: i64) -> PriceMapOffer {
    let mut map = PriceMap::default();
    map.price.get_or_insert_default().apparent_energy_price.get_or_insert_default().units = units;
    PriceMapOffer { route: None, offer_id: Some(Uuid { hi, lo: 0 }), when: None, price_map: Some(map) }
}

#[tokio::test]
async fn all_four_shapes_through_a_gateway() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(DerFacilityServiceServer::new(Facility))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let resi = ResiConfig { name: "esi-sn".into(), connect_timeout: Duration::from_secs(1), ..ResiConfig::default() };
        let gw = Gateway::start(Config {
            source: None,
            tcp: Some(TcpConfig { listen: vec!["127.0.0.1:0".into()], address: vec![upstream.to_string()] }),
            nkn: None,
            resi,
            reverse: None,
            tls: None,
            metrics: None,
        })
        .expect("gateway starts");
        let mut client = DerFacilityServiceClient::connect(format!("http://{}", gw.local_addrs()[0])).await.unwrap();

        let route = DerRoute { exchange_uid: "ex".into(), facility_uid: "facility".into(), signature: None };
        let params = client.get_power_parameters(route).await.unwrap().into_inner();
        assert_eq!(params.voltage_range, Some(SignedInt32Range { min: 2, max: 8 }));

        let prices = (0..3).map(|i| PriceDatum { time_length: i, ..Default::default() });
        client.provide_prices(tokio_stream::iter(prices)).await.unwrap();

        let request = DatumRequest { time_unit: TimeUnit::Minute as i32, time_unit_coalescence: 3, ..Default::default() };
        let profile: Vec<PowerProfileDatum> =
            client.list_power_profile(request).await.unwrap().into_inner().collect::<Result<_, _>>().await.unwrap();
        assert_eq!(profile.iter().map(|d| d.time_length).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(profile.iter().all(|d| d.time_unit == TimeUnit::Minute as i32));

        let offers = tokio_stream::iter([offer(1, 25)]).chain(tokio_stream::iter([offer(2, 10)]));
        let answers: Vec<PriceMapOfferResponse> =
            client.propose_price_map_offer(offers).await.unwrap().into_inner().collect::<Result<_, _>>().await.unwrap();
        assert_eq!(answers.len(), 2);
        match &answers[0].accept_oneof {
            Some(AcceptOneof::CounterOffer(map)) => assert_eq!(units(map), 10),
            other => panic!("expected a counter-offer, got {other:?}"),
        }
        assert_eq!(answers[1].accept_oneof, Some(AcceptOneof::Accept(true)));
        assert_eq!(answers[1].offer_id, Some(Uuid { hi: 2, lo: 0 }));

        let unimplemented = client.get_price_parameters(DerRoute::default()).await.unwrap_err();
        assert_eq!(unimplemented.code(), tonic::Code::Unimplemented);

        gw.shutdown().await;
        server.abort();
    })
    .await
    .expect("test timed out");
}
