#![no_main]

// normalize_uri against the `http` crate's URI parser: the view axum routes by.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keybound::fuzzing::uri_differential(data, |normal| {
        let uri: http::Uri = normal.parse().ok()?;
        Some(keybound::fuzzing::UriView {
            scheme: uri.scheme_str()?.to_owned(),
            host: uri.host()?.to_owned(),
            port: uri.port_u16(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
        })
    })
});
