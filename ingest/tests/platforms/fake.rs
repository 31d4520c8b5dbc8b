//! A fake platform API: scripted answers per (method, path, text the query
//! or body contains), a queue of one-off answers before a default one, and
//! a log of every request, with the most requests it had in flight at once.
//!
//! Two Shopify behaviours are built in: `shop.json` answers with the shop's
//! IANA time zone (`America/New_York` unless set, or a scripted route), and
//! the orders of an `orders.json` answer are cut down to the `fields=` the
//! request asked for, as Shopify does.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

/// One scripted answer.
#[derive(Clone)]
pub(crate) struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Option<Duration>,
}

impl Resp {
    pub(crate) fn json(status: u16, body: &str) -> Self {
        Self::bytes(status, body.as_bytes().to_vec())
    }

    pub(crate) fn bytes(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body,
            delay: None,
        }
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Answers only after `d` (longer than the client's timeout: a timeout).
    pub(crate) fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }
}

struct Route {
    method: String,
    path: String,
    contains: Option<String>,
    queue: VecDeque<Resp>,
    default: Option<Resp>,
}

struct Logged {
    method: String,
    path: String,
    headers: HeaderMap,
}

#[derive(Default)]
struct Inner {
    routes: Vec<Route>,
    log: Vec<Logged>,
    tokens: VecDeque<String>,
    shop_zone: Option<String>,
    /// Requests in flight now and at most, in all and per path.
    in_flight: HashMap<String, (usize, usize)>,
}

/// Counts a request in flight until dropped.
struct InFlight(Arc<Mutex<Inner>>, String);

impl InFlight {
    const ALL: &'static str = "*";

    fn enter(inner: &Arc<Mutex<Inner>>, path: &str) -> Self {
        let mut i = inner.lock().unwrap();
        for key in [Self::ALL, path] {
            let (now, max) = i.in_flight.entry(key.to_owned()).or_default();
            *now += 1;
            *max = (*max).max(*now);
        }
        Self(Arc::clone(inner), path.to_owned())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut i = self.0.lock().unwrap();
        for key in [Self::ALL, self.1.as_str()] {
            if let Some((now, _)) = i.in_flight.get_mut(key) {
                *now -= 1;
            }
        }
    }
}

/// Keeps only the `fields=` of each order of a Shopify `orders.json` body.
fn shopify_fields(query: &str, body: Vec<u8>) -> Vec<u8> {
    let Some(fields) = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "fields")
        .map(|(_, v)| v.split(',').map(str::to_owned).collect::<BTreeSet<_>>())
    else {
        return body;
    };
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return body;
    };
    if let Some(orders) = value.get_mut("orders").and_then(|o| o.as_array_mut()) {
        for order in orders.iter_mut().filter_map(|o| o.as_object_mut()) {
            order.retain(|k, _| fields.contains(k));
        }
    }
    serde_json::to_vec(&value).unwrap()
}

/// The running fake server; stops with the test's runtime.
pub(crate) struct FakePlatform {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, req: Request) -> Response {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 10 << 20)
        .await
        .unwrap_or_default();
    let text = format!("{query}\n{}", String::from_utf8_lossy(&body));
    let _in_flight = InFlight::enter(&inner, &path);
    let answer = {
        let mut inner = inner.lock().unwrap();
        inner.log.push(Logged {
            method: method.clone(),
            path: path.clone(),
            headers,
        });
        if method == "POST" && path == "/token" {
            let token = inner
                .tokens
                .pop_front()
                .unwrap_or_else(|| "tok-last".to_owned());
            Some(Resp::json(
                200,
                &format!(r#"{{"access_token":"{token}","expires_in":3600,"token_type":"Bearer"}}"#),
            ))
        } else {
            inner
                .routes
                .iter_mut()
                .find(|r| {
                    r.method == method
                        && r.path == path
                        && r.contains
                            .as_ref()
                            .is_none_or(|c| text.contains(c.as_str()))
                })
                .and_then(|r| r.queue.pop_front().or_else(|| r.default.clone()))
                .or_else(|| {
                    (method == "GET" && path.ends_with("/shop.json")).then(|| {
                        let zone = inner.shop_zone.as_deref().unwrap_or("America/New_York");
                        Resp::json(
                            200,
                            &format!(
                                r#"{{"shop":{{"id":690933842,"name":"Fake shop","iana_timezone":"{zone}","currency":"USD"}}}}"#
                            ),
                        )
                    })
                })
        }
    };
    let Some(answer) = answer else {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from(format!("no route for {method} {path}")))
            .unwrap();
    };
    if let Some(d) = answer.delay {
        tokio::time::sleep(d).await;
    }
    let mut builder = Response::builder().status(answer.status);
    for (k, v) in &answer.headers {
        builder = builder.header(k, v);
    }
    let body = if path.ends_with("/orders.json") {
        shopify_fields(&query, answer.body)
    } else {
        answer.body
    };
    builder.body(Body::from(body)).unwrap()
}

impl FakePlatform {
    pub(crate) async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner }
    }

    pub(crate) fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Scripts (or re-scripts) a route: `queue` answers first, then
    /// `default` for ever.
    pub(crate) fn route(
        &self,
        method: &str,
        path: &str,
        contains: Option<&str>,
        queue: Vec<Resp>,
        default: Option<Resp>,
    ) {
        let mut inner = self.inner.lock().unwrap();
        let route = Route {
            method: method.to_owned(),
            path: path.to_owned(),
            contains: contains.map(str::to_owned),
            queue: queue.into(),
            default,
        };
        match inner.routes.iter_mut().find(|r| {
            r.method == route.method && r.path == route.path && r.contains == route.contains
        }) {
            Some(existing) => *existing = route,
            None => inner.routes.push(route),
        }
    }

    /// The IANA time zone `shop.json` answers with.
    pub(crate) fn shop_time_zone(&self, zone: &str) {
        self.inner.lock().unwrap().shop_zone = Some(zone.to_owned());
    }

    /// The most requests that were in flight at once, to `path` or (`None`)
    /// to any path.
    pub(crate) fn max_in_flight(&self, path: Option<&str>) -> usize {
        let inner = self.inner.lock().unwrap();
        inner
            .in_flight
            .get(path.unwrap_or(InFlight::ALL))
            .map_or(0, |(_, max)| *max)
    }

    /// The access tokens the OAuth2 endpoint hands out, in order.
    pub(crate) fn token_replies(&self, tokens: &[&str]) {
        self.inner.lock().unwrap().tokens = tokens.iter().map(|t| (*t).to_owned()).collect();
    }

    /// Requests received for `method path`.
    pub(crate) fn hits(&self, method: &str, path: &str) -> usize {
        let inner = self.inner.lock().unwrap();
        inner
            .log
            .iter()
            .filter(|l| l.method == method && l.path == path)
            .count()
    }

    /// A header of the last request for `method path`.
    pub(crate) fn last_header(&self, method: &str, path: &str, name: &str) -> Option<String> {
        let inner = self.inner.lock().unwrap();
        inner
            .log
            .iter()
            .rev()
            .find(|l| l.method == method && l.path == path)
            .and_then(|l| l.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}
