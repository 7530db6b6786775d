//! Running one ClientApp handler safely: whatever the app does — return an error or panic —
//! the sender gets a reply, and the node that ran it keeps serving.

use floret_core::{ClientApp, Context, Message, MessageError, Payload, error_code};
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs the app's handler for `message` and builds the reply: content on success, an error
/// reply (code `CLIENT_APP_RAISED_EXCEPTION`) when the handler fails or panics.
pub fn execute(app: &ClientApp, message: &Message, context: &mut Context) -> Message {
    // The context is only read back after success, so a half-updated one is never kept.
    let mut scratch = context.clone();
    let outcome = catch_unwind(AssertUnwindSafe(|| app.handle(message, &mut scratch)));
    let payload = match outcome {
        Ok(Ok(content)) => {
            *context = scratch;
            Payload::Content(content)
        }
        Ok(Err(e)) => Payload::Error(MessageError::new(
            error_code::CLIENT_APP_RAISED_EXCEPTION,
            format!("ClientApp failed: {e}"),
        )),
        Err(panic) => Payload::Error(MessageError::new(
            error_code::CLIENT_APP_RAISED_EXCEPTION,
            format!("ClientApp panicked: {}", panic_message(panic.as_ref())),
        )),
    };
    message.reply(payload)
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-text panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{AppError, MetricRecord, RecordDict};

    fn app() -> ClientApp {
        ClientApp::new()
            .train(|_, ctx| {
                let mut m = MetricRecord::new();
                m.insert("calls", 1i64);
                ctx.state.insert("seen", m);
                Ok(RecordDict::new())
            })
            .evaluate(|_, _| Err(AppError::other("no validation data")))
            .query(|_, ctx| {
                ctx.state.insert("half-done", MetricRecord::new());
                panic!("index out of bounds")
            })
    }

    #[test]
    fn a_panicking_handler_becomes_an_error_reply_and_the_app_keeps_serving() {
        let app = app();
        let mut ctx = Context::default();
        let reply = execute(&app, &Message::new(RecordDict::new(), 1, "query"), &mut ctx);
        let err = reply.error().expect("error reply");
        assert_eq!(err.code, error_code::CLIENT_APP_RAISED_EXCEPTION);
        assert_eq!(err.reason, "ClientApp panicked: index out of bounds");
        assert!(
            ctx.state.get("half-done").is_none(),
            "state of a failed call is discarded"
        );
        let ok = execute(&app, &Message::new(RecordDict::new(), 1, "train"), &mut ctx);
        assert!(ok.error().is_none());
        assert!(
            ctx.state.get("seen").is_some(),
            "state of a successful call is kept"
        );
    }

    #[test]
    fn a_handler_error_is_reported_with_its_reason() {
        let reply = execute(
            &app(),
            &Message::new(RecordDict::new(), 1, "evaluate"),
            &mut Context::default(),
        );
        assert_eq!(
            reply.error().map(|e| e.reason.as_str()),
            Some("ClientApp failed: no validation data")
        );
    }
}
