//! Tables of entry points resolved by name at run time, with `dlsym` in the running process.
//!
//! The addon calls V8 and Node C++ functions that Node-API does not offer. It cannot link against
//! them (their presence and names vary with the Node version), so it looks each up by its mangled
//! name when first needed, and a missing one turns a capability off instead of failing the load.
//! [`symbol_table!`](crate::symbol_table) declares one such table: each field beside the name it
//! is resolved from, and the type says what the address is (the signature the mangled name
//! encodes, or [`Address`] for one only handed on). The macro provides the rest: the lookups, the
//! error naming every missing symbol, requirements checked first, and a once-per-process cache
//! behind `get()`.
//!
//! This module lives in the core crate, which has no Node symbols, so that `cargo test` covers it
//! (see the tests below, over libc's own symbols).

use std::ffi::{c_void, CStr};
use std::ptr::NonNull;

/// The address of `name` in the running process (the executable and every loaded library, in
/// load order), or None.
pub fn lookup(name: &CStr) -> Option<NonNull<c_void>> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads the loader's tables.
    NonNull::new(unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) })
}

/// The address of the first of `names` that is found (a symbol renamed between versions: the
/// current name first).
pub fn find(names: &[&CStr]) -> Option<NonNull<c_void>> {
    names.iter().find_map(|name| lookup(name))
}

/// A symbol whose address is only passed on, never called from Rust: a vtable, a C++ function
/// whose signature Rust cannot express (the C++ shim calls it).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(transparent)]
pub struct Address(NonNull<c_void>);

// SAFETY: an address in the process's code or read-only data, valid for the process's life; only
// the value is shared, nothing is read or written through it here.
unsafe impl Send for Address {}
// SAFETY: as for Send.
unsafe impl Sync for Address {}

impl Address {
    pub fn as_ptr(self) -> *mut c_void {
        self.0.as_ptr()
    }
}

/// What a table has not found, for its error: "missing V8 symbols: a, b (or c)".
pub struct Missing {
    what: &'static str,
    names: Vec<String>,
}

impl Missing {
    /// `what` names where the symbols come from ("V8").
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            names: Vec::new(),
        }
    }

    /// [`find`], recording `names` as missing when none of them is found.
    pub fn require(&mut self, names: &[&CStr]) -> Option<NonNull<c_void>> {
        let found = find(names);
        if found.is_none() {
            let mut text = String::new();
            for (i, name) in names.iter().enumerate() {
                let name = name.to_string_lossy();
                match i {
                    0 => text.push_str(&name),
                    1 => text.push_str(&format!(" (or {name}")),
                    _ => text.push_str(&format!(", {name}")),
                }
            }
            if names.len() > 1 {
                text.push(')');
            }
            self.names.push(text);
        }
        found
    }

    pub fn into_error(self) -> String {
        format!("missing {} symbols: {}", self.what, self.names.join(", "))
    }
}

/// Declares a table of symbols resolved at run time, and its `get()`.
///
/// ```ignore
/// symbol_table! {
///     /// What the table is for.
///     pub struct Terminate in "V8" {
///         terminate: IsolateMethodFn = c"_ZN2v87Isolate18TerminateExecutionEv",
///         /// Renamed in V8 13: the first name found is used.
///         prototype: GetterFn = c"_ZN2v86Object14GetPrototypeV2Ev" | c"_ZN2v86Object12GetPrototypeEv",
///     }
///     optional {
///         /// An `Option<DrainFn>` field: None when not exported.
///         drain: DrainFn = c"...",
///     }
///     requires: [v8::enabled(), Api::get()];
/// }
/// ```
///
/// - Each field is declared once, beside its name(s); a field of an `optional { }` block has the
///   type `Option<T>`. The type is a function pointer with the signature the mangled name encodes,
///   or [`Address`] for a symbol only handed on: **that pairing is what makes the table sound**,
///   and is the one thing to check when adding a field.
/// - `requires`: expressions of type `Result<_, E: ToString>`, evaluated in order before any
///   lookup; the first error is the table's error (the switch that disables a group of symbols,
///   another table this one depends on).
/// - `Table::get()` resolves the table on its first call, and returns the same answer for the
///   life of the process: the table, or why it is unavailable ("missing {what} symbols: " and
///   every required symbol not found, each with its alternatives).
#[macro_export]
macro_rules! symbol_table {
    (
        $(#[$meta:meta])*
        $vis:vis struct $table:ident in $what:literal {
            $(
                $(#[$field_meta:meta])*
                $field_vis:vis $field:ident : $ty:ty = $($name:literal)|+
            ),+ $(,)?
        }
        $(
            optional {
                $(
                    $(#[$opt_meta:meta])*
                    $opt_vis:vis $opt:ident : $opt_ty:ty = $($opt_name:literal)|+
                ),+ $(,)?
            }
        )?
        $(requires: [$($requirement:expr),+ $(,)?];)?
    ) => {
        $(#[$meta])*
        $vis struct $table {
            $( $(#[$field_meta])* $field_vis $field: $ty, )+
            $($( $(#[$opt_meta])* $opt_vis $opt: ::core::option::Option<$opt_ty>, )+)?
        }

        impl $table {
            /// The table, resolved on the first call; or why it is unavailable (an unmet
            /// requirement, or the symbols that are missing). The same answer every time.
            $vis fn get() -> ::core::result::Result<&'static Self, &'static str> {
                static TABLE: ::std::sync::OnceLock<
                    ::core::result::Result<$table, ::std::string::String>,
                > = ::std::sync::OnceLock::new();
                TABLE.get_or_init(Self::resolve).as_ref().map_err(|e| e.as_str())
            }

            fn resolve() -> ::core::result::Result<Self, ::std::string::String> {
                $($(
                    if let ::core::result::Result::Err(e) = $requirement {
                        return ::core::result::Result::Err(::std::string::ToString::to_string(&e));
                    }
                )+)?
                let mut missing = $crate::symbols::Missing::new($what);
                $( let $field = missing.require(&[$($name),+]); )+
                let ($(::core::option::Option::Some($field),)+) = ($($field,)+) else {
                    return ::core::result::Result::Err(missing.into_error());
                };
                $($( let $opt = $crate::symbols::find(&[$($opt_name),+]); )+)?
                // SAFETY: each address is the symbol named beside its field, found (non-null), and
                // the field's type is what that symbol is: a function pointer with the signature
                // its mangled name encodes, or `Address` (a `NonNull` in a transparent wrapper).
                // The transmutes are between pointer-sized types (checked by `transmute` at compile
                // time); `Option<NonNull<_>>` and `Option` of a function pointer or of `Address`
                // both represent None as null (Rust's guaranteed null-pointer optimisation).
                ::core::result::Result::Ok(unsafe {
                    Self {
                        $(
                            $field: ::core::mem::transmute::<
                                ::core::ptr::NonNull<::core::ffi::c_void>,
                                $ty,
                            >($field),
                        )+
                        $($(
                            $opt: ::core::mem::transmute::<
                                ::core::option::Option<::core::ptr::NonNull<::core::ffi::c_void>>,
                                ::core::option::Option<$opt_ty>,
                            >($opt),
                        )+)?
                    }
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::raw::c_int;

    type GetPidFn = unsafe extern "C" fn() -> libc::pid_t;
    type AbsFn = unsafe extern "C" fn(c_int) -> c_int;

    crate::symbol_table! {
        /// libc functions, one under an old name first and one optional that does not exist.
        struct Libc in "libc" {
            getpid: GetPidFn = c"getpid",
            abs: AbsFn = c"loop_helpers_no_such_abs" | c"abs",
            /// Only handed on.
            getppid: Address = c"getppid",
        }
        optional {
            absent: AbsFn = c"loop_helpers_no_such_symbol",
            labs: Address = c"labs",
        }
    }

    crate::symbol_table! {
        #[allow(dead_code)] // never resolves
        struct Broken in "test" {
            getpid: GetPidFn = c"getpid",
            first: AbsFn = c"loop_helpers_missing_one",
            second: AbsFn = c"loop_helpers_missing_two" | c"loop_helpers_missing_three",
        }
    }

    crate::symbol_table! {
        #[allow(dead_code)] // never resolves
        struct Dependent in "libc" {
            getpid: GetPidFn = c"getpid",
        }
        requires: [Libc::get(), Err::<(), _>("switched off"), Broken::get()];
    }

    #[test]
    fn a_table_resolves_its_symbols_and_alternatives_and_calls_them() {
        let t = Libc::get().expect("libc's symbols are exported");
        // SAFETY: getpid and abs have exactly these signatures and no preconditions.
        unsafe {
            assert_eq!((t.getpid)(), libc::getpid());
            assert_eq!((t.abs)(-7), 7);
        }
        assert_eq!(t.getppid.as_ptr(), lookup(c"getppid").unwrap().as_ptr());
        assert!(t.absent.is_none());
        assert_eq!(
            t.labs.map(Address::as_ptr),
            lookup(c"labs").map(NonNull::as_ptr)
        );
        // Resolved once: the same table every time.
        assert!(std::ptr::eq(t, Libc::get().unwrap()));
    }

    #[test]
    fn the_error_names_every_missing_symbol_with_its_alternatives() {
        let Err(e) = Broken::get() else {
            panic!("a table with missing symbols resolved");
        };
        assert_eq!(
            e,
            "missing test symbols: loop_helpers_missing_one, loop_helpers_missing_two (or \
             loop_helpers_missing_three)"
        );
        assert!(
            std::ptr::eq(e, Broken::get().err().unwrap()),
            "resolved once"
        );
    }

    #[test]
    fn the_first_unmet_requirement_is_the_error() {
        assert_eq!(Dependent::get().err(), Some("switched off"));
    }

    #[test]
    fn lookups_find_the_first_name_present() {
        assert!(lookup(c"loop_helpers_no_such_symbol").is_none());
        assert_eq!(
            find(&[c"loop_helpers_no_such_symbol", c"getpid", c"abs"]),
            lookup(c"getpid")
        );
        assert_eq!(find(&[]), None);
    }
}
