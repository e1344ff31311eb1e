//! A call's way through admission: reading its request, judging it (too
//! large, does not decode, compressed without an encoding), taking a place,
//! and the statuses admission answers with.

use super::*;

/// The response future of [`AdmissionService`].
///
/// Its state is boxed: a call's request head, its intake and then the
/// inner call's future are most of a call's future, and every layer above
/// would otherwise move them again as it wraps its own around them.
pub struct AdmissionFuture<S>
where
    S: Service<http::Request<tonic::body::Body>>,
{
    // The caller's accept-language, for the statuses admission makes.
    pub(super) accept_language: Option<HeaderValue>,
    pub(super) state: Pin<Box<State<S>>>,
}

pin_project! {
    #[project = StateProj]
    pub(super) enum State<S>
    where
        S: Service<http::Request<tonic::body::Body>>,
    {
        // Reading the request before taking a place.
        Reading {
            inner: Option<S>,
            parts: Option<http::request::Parts>,
            body: Option<tonic::body::Body>,
            buffered: Buffered,
            trailers: Option<HeaderMap>,
            want: Want,
            encoded: bool,
            input: Option<MessageDescriptor>,
            long_lived: bool,
            in_flight: Option<InFlight>,
            admission: Admission,
            // The call's share of the intake budget, once it has had to
            // wait for its request.
            charge: Option<IntakeCharge>,
            // Whether `deadline` is the caller's (grpc-timeout) rather than
            // the body timeout.
            caller_deadline: bool,
            // How long the request may take to arrive: the body timeout,
            // or the caller's deadline if sooner.
            timeout: Duration,
            // Its timer, made only once the request has had to be waited
            // for: most requests are whole when the call is first polled,
            // right after it was made.
            deadline: Option<Pin<Box<Sleep>>>,
        },
        // The call runs.
        Running {
            #[pin]
            future: S::Future,
            check: Option<(MessageDescriptor, Bytes)>,
            held: Option<Held>,
        },
        // Answered by the layer itself.
        Refused { code: ErrorCode },
        // The caller's deadline passed while its request was still arriving.
        Expired,
    }
}

/// What a running call holds until it ends: its place and its count.
#[derive(Debug)]
pub(super) struct Held {
    /// The count; its reference to the shared state gives the place back.
    pub(super) in_flight: InFlight,
    /// Long-lived streams hold both until their response body ends (and
    /// their place is one of the stream places).
    pub(super) long_lived: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        let shared = &self.in_flight.shared;
        if self.long_lived {
            shared.stream_places.give_back();
        } else {
            shared.places.give_back();
        }
    }
}

impl<S> AdmissionFuture<S>
where
    S: Service<http::Request<tonic::body::Body>>,
{
    pub(super) fn refused(code: ErrorCode, accept_language: Option<HeaderValue>) -> Self {
        Self {
            accept_language,
            state: Box::pin(State::Refused { code }),
        }
    }
}

/// Where the intake stands after what it has read.
pub(super) enum Intake {
    /// More is needed.
    More,
    /// The request is in (or as much of it as is wanted).
    Done,
    /// The request is bad: answer 40.
    Bad,
}

/// The request bytes read so far: most requests come in one frame, which is
/// kept as it came; only a request in several frames is copied together.
#[derive(Debug, Default)]
pub(super) enum Buffered {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Buffered {
    pub(super) fn push(&mut self, data: Bytes) {
        *self = match std::mem::take(self) {
            Buffered::Empty => Buffered::One(data),
            Buffered::One(first) => {
                let mut many = BytesMut::with_capacity(first.len() + data.len());
                many.extend_from_slice(&first);
                many.extend_from_slice(&data);
                Buffered::Many(many)
            }
            Buffered::Many(mut many) => {
                many.extend_from_slice(&data);
                Buffered::Many(many)
            }
        };
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        match self {
            Buffered::Empty => &[],
            Buffered::One(bytes) => bytes,
            Buffered::Many(many) => many,
        }
    }

    pub(super) fn take(&mut self) -> Bytes {
        match std::mem::take(self) {
            Buffered::Empty => Bytes::new(),
            Buffered::One(bytes) => bytes,
            Buffered::Many(many) => many.freeze(),
        }
    }
}

/// Judges the bytes read so far: `ended` is whether the body is over.
pub(super) fn judge(buffered: &[u8], ended: bool, want: Want, encoded: bool, max: usize) -> Intake {
    if buffered.len() >= 5 {
        let flag = buffered[0];
        let len = u32::from_be_bytes([buffered[1], buffered[2], buffered[3], buffered[4]]) as usize;
        if flag > 1 || (flag == 1 && !encoded) || len > max {
            return Intake::Bad;
        }
        let first_in = buffered.len() >= 5 + len;
        return match (want, first_in, ended) {
            (_, false, true) => Intake::Bad,
            (Want::First, true, _) | (Want::Whole, true, true) => Intake::Done,
            // A single-request method does not need more than its message
            // (and perhaps trailers); anything past it is not read here.
            (Want::Whole, true, false) if buffered.len() > 5 + len + 5 => Intake::Bad,
            _ => Intake::More,
        };
    }
    match (ended, want, buffered.is_empty()) {
        // No message at all: a single-request method cannot run.
        (true, Want::Whole, _) => Intake::Bad,
        (true, Want::First, true) => Intake::Done,
        (true, Want::First, false) => Intake::Bad,
        (false, ..) => Intake::More,
    }
}

/// The first message of a request, if it came whole and uncompressed.
pub(super) fn first_message(buffered: &Bytes) -> Option<Bytes> {
    if buffered.len() < 5 || buffered[0] != 0 {
        return None;
    }
    let len = u32::from_be_bytes([buffered[1], buffered[2], buffered[3], buffered[4]]) as usize;
    (buffered.len() >= 5 + len).then(|| buffered.slice(5..5 + len))
}

impl<S, ResBody> Future for AdmissionFuture<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Output = Result<http::Response<AdmissionBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Unpin: the state is pinned in its box.
        let this = self.get_mut();
        loop {
            let accept_language = this.accept_language.as_ref();
            let refusal = |code| refusal(code, accept_language);
            let next = match this.state.as_mut().project() {
                StateProj::Refused { code } => {
                    // Answered again if polled again: never a hang.
                    return Poll::Ready(Ok(refusal(*code)));
                }
                StateProj::Expired => {
                    return Poll::Ready(Ok(tonic::Status::deadline_exceeded(
                        "the deadline passed before the request arrived",
                    )
                    .into_http()
                    .map(|inner| AdmissionBody { inner, held: None })));
                }
                StateProj::Running {
                    future,
                    check,
                    held,
                } => {
                    let response = match ready!(future.poll(cx)) {
                        Ok(response) => response,
                        Err(error) => return Poll::Ready(Err(error)),
                    };
                    if let Some((input, message)) = check.take() {
                        if is_decode_failure_code(response.headers())
                            && DynamicMessage::decode(input, message).is_err()
                        {
                            held.take();
                            return Poll::Ready(Ok(refusal(ErrorCode::ApiInvalidRequest)));
                        }
                    }
                    let held = held.take().filter(|h| h.long_lived);
                    return Poll::Ready(Ok(response.map(|inner| AdmissionBody { inner, held })));
                }
                StateProj::Reading {
                    inner,
                    parts,
                    body,
                    buffered,
                    trailers,
                    want,
                    encoded,
                    input,
                    long_lived,
                    in_flight,
                    admission,
                    charge,
                    caller_deadline,
                    timeout,
                    deadline,
                } => {
                    if charge.as_ref().is_some_and(IntakeCharge::is_refused) {
                        in_flight.take();
                        this.state.set(State::Refused {
                            code: ErrorCode::ApiTooManyRequests,
                        });
                        continue;
                    }
                    let max = admission.shared.config.max_request_size;
                    // Read what is there.
                    let verdict = loop {
                        let Some(reading) = body.as_mut() else {
                            break judge(buffered.as_slice(), true, *want, *encoded, max);
                        };
                        // A body that says it has ended is read to its
                        // end all the same: gRPC-Web's decoder says so
                        // while it still holds a trailers frame that may
                        // be malformed (40, not the handler's 42).
                        match judge(
                            buffered.as_slice(),
                            reading.is_end_stream() && *want == Want::First,
                            *want,
                            *encoded,
                            max,
                        ) {
                            Intake::More => {}
                            other => break other,
                        }
                        let polled = Pin::new(reading).poll_frame(cx);
                        match polled {
                            Poll::Pending => break Intake::More,
                            Poll::Ready(None) => {
                                *body = None;
                            }
                            Poll::Ready(Some(Err(_))) => break Intake::Bad,
                            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                                Ok(data) => buffered.push(data),
                                Err(frame) => {
                                    if let Ok(t) = frame.into_trailers() {
                                        *trailers = Some(t);
                                    }
                                    *body = None;
                                }
                            },
                        }
                    };
                    match verdict {
                        Intake::More => {
                            let deadline = deadline
                                .get_or_insert_with(|| Box::pin(tokio::time::sleep(*timeout)));
                            if deadline.as_mut().poll(cx).is_pending() {
                                let total = buffered.as_slice().len()
                                    + parts.as_ref().map_or(0, head_bytes);
                                let charge = charge.get_or_insert_with(|| {
                                    IntakeBudget::charge(&admission.shared, total)
                                });
                                if !charge.update(total, cx.waker()) {
                                    return Poll::Pending;
                                }
                                tracing::debug!(
                                    "intake memory budget: the oldest intake is refused"
                                );
                                in_flight.take();
                                this.state.set(State::Refused {
                                    code: ErrorCode::ApiTooManyRequests,
                                });
                                continue;
                            }
                            in_flight.take();
                            if *caller_deadline {
                                // Before tonic's own timeout, which would
                                // answer CANCELLED: the call ran out of time.
                                State::Expired
                            } else {
                                tracing::debug!("request body timeout");
                                State::Refused {
                                    code: ErrorCode::ApiInvalidRequest,
                                }
                            }
                        }
                        Intake::Bad => {
                            in_flight.take();
                            State::Refused {
                                code: ErrorCode::ApiInvalidRequest,
                            }
                        }
                        Intake::Done => {
                            let places = if *long_lived {
                                &admission.shared.stream_places
                            } else {
                                &admission.shared.places
                            };
                            // Exempt calls (no count) need no place.
                            let placed = in_flight.is_none() || places.try_take();
                            if !placed {
                                tracing::debug!("load shed");
                                admission.shared.shed.fetch_add(1, Ordering::Relaxed);
                                in_flight.take();
                                State::Refused {
                                    code: ErrorCode::ApiTooManyRequests,
                                }
                            } else {
                                // The place is given back with it,
                                // whatever happens next.
                                let held = in_flight.take().map(|in_flight| Held {
                                    in_flight,
                                    long_lived: *long_lived,
                                });
                                let data = buffered.take();
                                let check = input
                                    .take()
                                    .and_then(|input| Some((input, first_message(&data)?)));
                                let replay = ReplayBody {
                                    data: (!data.is_empty()).then_some(data),
                                    rest: body.take(),
                                    trailers: trailers.take(),
                                };
                                let Some(parts) = parts.take() else {
                                    return Poll::Ready(Ok(refusal(
                                        ErrorCode::ApiInternalServerError,
                                    )));
                                };
                                let Some(mut service) = inner.take() else {
                                    return Poll::Ready(Ok(refusal(
                                        ErrorCode::ApiInternalServerError,
                                    )));
                                };
                                let request = http::Request::from_parts(
                                    parts,
                                    tonic::body::Body::new(replay),
                                );
                                State::Running {
                                    future: service.call(request),
                                    check,
                                    held,
                                }
                            }
                        }
                    }
                }
            };
            this.state.set(next);
        }
    }
}

/// Whether a response's headers (trailers-only) carry the status tonic
/// gives a request it cannot decode: INTERNAL. (Its other decode failures,
/// size, framing and compression, never reach it: the intake answers them.)
/// Only then is the request decoded again, so that a handler's ordinary
/// errors, a lookup miss say, cost no second decode.
pub(super) fn is_decode_failure_code(headers: &HeaderMap) -> bool {
    errmap::headers::grpc_status_code(headers) == Some(tonic::Code::Internal as i32)
}

/// A trailers-only response with the catalog status of `code`, in the
/// caller's locale.
pub(super) fn refusal<B: Default>(
    code: ErrorCode,
    accept_language: Option<&HeaderValue>,
) -> http::Response<AdmissionBody<B>> {
    code.to_status_for(accept_language)
        .into_http()
        .map(|inner| AdmissionBody { inner, held: None })
}
