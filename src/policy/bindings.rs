//! Host bindings generated from the frozen WIT (wit/v1.0.0): the `chord-policy` world.

wasmtime::component::bindgen!({
    path: "wit/v1.0.0",
    world: "chord-policy",
});
