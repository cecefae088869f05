//! JSON bodies and refusals outside `/fhir`: every refusal is `{error, message}` with a code
//! from [`Refusal`], including a body that is not the JSON a route takes (axum's own
//! rejection is plain text).

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use carekeep_protocol::refusal::{Refusal, RefusalBody};
use serde::de::DeserializeOwned;

/// A refusal as a response.
pub fn refusal(status: StatusCode, error: Refusal, message: &str) -> Response {
    (status, axum::Json(RefusalBody { error, message: message.to_owned() })).into_response()
}

/// A JSON body of type `T`; anything else is refused with [`Refusal::InvalidRequest`],
/// naming where the body went wrong (a field, a line and column), never a value.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => {
                let message = match &rejection {
                    axum::extract::rejection::JsonRejection::MissingJsonContentType(_) => {
                        "Send the body as application/json.".to_owned()
                    }
                    axum::extract::rejection::JsonRejection::JsonDataError(e) => {
                        format!("The body does not have the fields this request takes: {}.", where_in(&e.body_text()))
                    }
                    _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                        "The body is larger than this request takes; send less.".to_owned()
                    }
                    _ => "The body is not JSON.".to_owned(),
                };
                Err(refusal(rejection.status(), Refusal::InvalidRequest, &message))
            }
        }
    }
}

/// The part of serde's message that says where (a path, a line and column), without the
/// value it quotes.
fn where_in(text: &str) -> String {
    // axum: "Failed to deserialize the JSON body into the target type: PATH: MESSAGE at line L column C".
    let detail = text.split_once("target type: ").map_or(text, |(_, d)| d);
    let path = detail.split_once(": ").map_or("", |(p, _)| p);
    let position = detail.rfind(" at line ").map_or("", |i| &detail[i + 1..]);
    match (path.is_empty() || path.contains(' '), position.is_empty()) {
        (false, false) => format!("{path}, {position}"),
        (false, true) => path.to_owned(),
        (true, false) => position.to_owned(),
        (true, true) => "see the API documentation".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn where_a_body_went_wrong_is_named_without_its_values() {
        let text = "Failed to deserialize the JSON body into the target type: username: invalid type: string \
                    \"SENTINEL\", expected u32 at line 1 column 21";
        let said = super::where_in(text);
        assert_eq!(said, "username, at line 1 column 21");
        let missing =
            "Failed to deserialize the JSON body into the target type: missing field `password` at line 1 column 2";
        assert!(!super::where_in(missing).contains("SENTINEL"));
    }
}
