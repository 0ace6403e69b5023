//! Opaque types for foreign pointers.

/// Declares types that only exist behind a pointer, as C headers do with
/// `typedef struct napi_env__* napi_env;`: each kind of handle gets its own pointer type, so
/// passing one kind where another is expected does not compile, while the FFI ABI stays one
/// pointer. The zero-sized private field makes the type impossible to construct outside its
/// module; the marker makes it neither `Send`, `Sync` nor `Unpin` (the pointee belongs to the
/// foreign side), as the Rustonomicon recommends for opaque FFI types.
///
/// ```
/// loop_helpers_core::opaque_types! {
///     /// A `v8::Isolate`; only ever used behind a pointer.
///     pub Isolate;
/// }
/// fn takes(_: *mut Isolate) {}
/// takes(std::ptr::null_mut());
/// ```
///
/// ```compile_fail
/// loop_helpers_core::opaque_types! { pub Env; pub Value; }
/// fn takes_env(_: *mut Env) {}
/// let v: *mut Value = std::ptr::null_mut();
/// takes_env(v); // a value where an env is expected
/// ```
#[macro_export]
macro_rules! opaque_types {
    ($($(#[$doc:meta])* $vis:vis $name:ident;)*) => {$(
        $(#[$doc])*
        #[repr(C)]
        $vis struct $name {
            _private: [u8; 0],
            _pinned: ::core::marker::PhantomData<(*mut u8, ::core::marker::PhantomPinned)>,
        }
    )*};
}
