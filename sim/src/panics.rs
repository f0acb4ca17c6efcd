//! Panics: those of node code are violations, those of the simulator are bugs.
//!
//! Node code (raft-core, the state machine, the ready-handling loop) runs
//! inside [`node_code`], which catches its panic and returns it as text with
//! its location, so that the world reports it as a broken property. The
//! panic hook stays silent for those panics only: a panic anywhere else is a
//! bug of the simulator itself and goes to the hook that was installed
//! before (the default one prints the message and the location), and the
//! process exits non-zero.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, PanicHookInfo, catch_unwind};
use std::sync::Once;

thread_local! {
    /// Set while node code runs on this thread.
    static IN_NODE_CODE: Cell<bool> = const { Cell::new(false) };
    /// The last node-code panic on this thread, with its location.
    static LAST_NODE_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

fn message(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_string()
    };
    match info.location() {
        Some(at) => format!("{text} (at {}:{})", at.file(), at.line()),
        None => text,
    }
}

/// Installs the hook once per process; the previous hook keeps every panic
/// that is not node code's.
pub fn install_hook() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_NODE_CODE.with(Cell::get) {
                let text = message(info);
                LAST_NODE_PANIC.with(|last| *last.borrow_mut() = Some(text));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs node code; a panic comes back as its message and location.
pub fn node_code<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    install_hook();
    let outer = IN_NODE_CODE.with(|flag| flag.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    IN_NODE_CODE.with(|flag| flag.set(outer));
    result.map_err(|_| {
        LAST_NODE_PANIC
            .with(|last| last.borrow_mut().take())
            .unwrap_or_else(|| "panic without a message".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_code_panic_comes_back_with_its_location() {
        let text = node_code(|| -> u32 { panic!("commit 7 beyond last index 5") }).unwrap_err();
        assert!(
            text.starts_with("commit 7 beyond last index 5 (at "),
            "{text}"
        );
        assert!(text.contains("panics.rs:"), "{text}");
    }

    #[test]
    fn a_panic_outside_node_code_still_unwinds_to_the_caller() {
        install_hook();
        let caught = std::panic::catch_unwind(|| panic!("simulator bug"));
        assert!(caught.is_err());
        assert!(node_code(|| 3).is_ok_and(|v| v == 3));
    }
}
