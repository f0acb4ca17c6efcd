//! `GET /watch`: a stream of NDJSON lines (API.md, Watch). The stream
//! itself is `crate::watch`; here the query is checked and the reply built.

use super::{ApiError, AppState};
use crate::watch::{LineStream, OpenError};
use kv_replica::state_machine::MAX_KEY_BYTES;
use kv_replica::watch::{WatchError, WatchFilter};
use warp::http::{Response, StatusCode, header};

/// A checked watch query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct WatchQuery {
    pub filter: WatchFilter,
    pub from_revision: Option<u64>,
}

/// Parses `key=k` or `prefix=p` (exactly one) and `from_revision=R`.
pub(super) fn parse_query(query: &str) -> Result<WatchQuery, ApiError> {
    let mut key = None;
    let mut prefix = None;
    let mut from_revision = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match &*name {
            "key" => &mut key,
            "prefix" => &mut prefix,
            "from_revision" => &mut from_revision,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown watch parameter {other:?}; expected key, prefix or from_revision"
                )));
            }
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(ApiError::BadRequest(format!(
                "watch parameter {name} given twice"
            )));
        }
    }
    let filter = match (key, prefix) {
        (Some(key), None) => {
            super::kv::check_key(&key)?;
            WatchFilter::Key(key)
        }
        (None, Some(prefix)) => {
            if prefix.len() > MAX_KEY_BYTES {
                return Err(ApiError::TooLarge(format!(
                    "prefix of {} bytes is over the key limit of {MAX_KEY_BYTES}",
                    prefix.len()
                )));
            }
            WatchFilter::Prefix(prefix)
        }
        _ => {
            return Err(ApiError::BadRequest(
                "a watch takes exactly one of key and prefix".into(),
            ));
        }
    };
    let from_revision = match from_revision {
        None => None,
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!(
                "from_revision must be a revision (an integer >= 0), got {text:?}"
            ))
        })?),
    };
    Ok(WatchQuery {
        filter,
        from_revision,
    })
}

/// Starts a watch: `200` and the stream, or the error as a reply.
pub(super) fn watch(state: &AppState, query: &str) -> Result<warp::reply::Response, ApiError> {
    let query = parse_query(query)?;
    let Some(watches) = &state.watches else {
        return Err(ApiError::Unavailable(
            "watches are not served by this node".into(),
        ));
    };
    let (_, stream) = watches
        .open(query.filter, query.from_revision)
        .map_err(|e| match e {
            OpenError::Hub(
                e @ WatchError::Compacted {
                    compact_revision, ..
                },
            ) => ApiError::Compacted {
                message: e.to_string(),
                compact_revision,
            },
            OpenError::Hub(e @ WatchError::TooManyWatches { .. }) => {
                ApiError::Overloaded(e.to_string())
            }
            OpenError::Stopped => ApiError::Unavailable(e.to_string()),
        })?;
    Ok(stream_response(stream))
}

fn stream_response(stream: LineStream) -> warp::reply::Response {
    let mut response = warp::reply::Reply::into_response(warp::reply::stream(stream));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// A non-streaming reply as the body type of the whole surface.
pub(super) fn plain(response: Response<Vec<u8>>) -> warp::reply::Response {
    warp::reply::Reply::into_response(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_take_exactly_one_of_key_and_prefix_and_a_revision() {
        assert_eq!(
            parse_query("key=a%2Fb&from_revision=7").unwrap(),
            WatchQuery {
                filter: WatchFilter::Key("a/b".into()),
                from_revision: Some(7)
            }
        );
        assert_eq!(
            parse_query("prefix=").unwrap().filter,
            WatchFilter::Prefix(String::new())
        );
        for bad in [
            "",
            "key=a&prefix=b",
            "key=",
            "from_revision=3",
            "key=a&from_revision=-1",
            "key=a&from_revision=x",
            "key=a&from_revision=",
            "key=a&key=b",
            "key=a&limit=3",
        ] {
            assert!(
                matches!(parse_query(bad), Err(ApiError::BadRequest(_))),
                "{bad:?} accepted"
            );
        }
        let long = format!("prefix={}", "p".repeat(MAX_KEY_BYTES + 1));
        assert!(matches!(parse_query(&long), Err(ApiError::TooLarge(_))));
    }
}
