//! Loading the configuration, opening the store, wiring the services and running the HTTP
//! listener until SIGINT or SIGTERM.

use std::{path::Path, sync::Arc, time::Duration};

use ranvier_client::{AppState, Services};
use ranvier_core::{Config, Result, config::DEFAULT_CONFIG_TOML, error::Context};
use ranvier_store::Store;
use tower::Layer;
use tower_http::cors::{Any, CorsLayer};

/// Read the config file (writing the commented default first if absent) and apply
/// `RANVIER_*` environment overrides.
pub fn load_config(path: &Path) -> Result<Config, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(path, DEFAULT_CONFIG_TOML)
                .map_err(|e| format!("write default config {}: {e}", path.display()))?;
            eprintln!("ranvier: wrote a default configuration to {}", path.display());
            DEFAULT_CONFIG_TOML.to_owned()
        }
        Err(e) => return Err(format!("read config {}: {e}", path.display())),
    };
    Config::from_toml_and_env(&text, std::env::vars())
}

/// Log to stderr with the configured filter (`RUST_LOG` wins).
pub fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Create the data directory and open (and migrate) the database.
pub async fn open_store(config: &Config) -> Result<Store> {
    std::fs::create_dir_all(&config.data_dir).context("create data directory")?;
    Store::open_with_cache(
        &config.database_url(),
        config.database.pool_size(ranvier_core::util::cores()),
        config.database.event_cache_mb as usize * 1024 * 1024,
        config.database.sqlite_cache_kb,
    )
    .await
}

/// Run the server until a shutdown signal arrives.
pub async fn serve(config: Config) -> Result<()> {
    let store = open_store(&config).await?;
    let signing_key = ranvier_rooms::keys::load_or_generate(&config.signing_key_path())?;
    let listen = config.listen.clone();
    let services = Services::new(config, store, signing_key)?;
    // Pushers deliver what they had not delivered before the last stop.
    services.push.start().await?;
    let state = AppState(Arc::new(services));
    let cors = CorsLayer::new().allow_origin(Any).allow_methods(Any).allow_headers(Any);
    // A panic in a handler is a bug; the client still gets a Matrix error, not a dropped
    // connection, and the process keeps serving.
    let catch_panic = tower_http::catch_panic::CatchPanicLayer::custom(|_| {
        ranvier_http::matrix_error(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            ranvier_core::error::ErrorKind::Unknown,
            "Internal server error".to_owned(),
        )
    });
    if state.config.federation.enabled {
        start_federation_listener(&state).await?;
    }
    // The layers wrap the router once, not each route (`Router::layer`): each layer on a
    // router boxes every request's future once more, and a waiting `/sync` keeps its
    // boxes for as long as it waits.
    let app = cors.layer(catch_panic.layer(ranvier_client::router(state)));
    let app = tower::ServiceExt::<axum::extract::Request>::map_response(app, |response: http::Response<_>| {
        response.map(axum::body::Body::new)
    });

    let listener = tokio::net::TcpListener::bind(&listen).await.context("bind client listener")?;
    let local = listener.local_addr().context("listener address")?;
    tracing::info!(address = %local, "listening for clients");
    // Each request carries the client's address, which keys the per-address rate limits.
    let parked = std::sync::Arc::default();
    crate::listener::serve(listener, app, crate::listener::IDLE, parked, shutdown_signal()).await;
    tracing::info!("shut down");
    Ok(())
}

/// Bind the federation TLS listener and serve the federation routes on it in the background.
async fn start_federation_listener(state: &AppState) -> Result<()> {
    let federation = &state.config.federation;
    let (Some(cert), Some(key)) = (&federation.tls_cert, &federation.tls_key) else {
        return Err(ranvier_core::Error::internal("federation is enabled but federation.tls_cert/tls_key are not set"));
    };
    let tls = ranvier_federation::tls::server_config(cert, key)?;
    let tcp = tokio::net::TcpListener::bind(&federation.listen).await.context("bind federation listener")?;
    let local = tcp.local_addr().context("federation listener address")?;
    tracing::info!(address = %local, "listening for federation (TLS)");
    let listener = ranvier_federation::tls::TlsListener::new(tcp, tls).context("start federation listener")?;
    let app = ranvier_client::federation::router(state.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "federation listener failed");
        }
    });
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
    // Long-polling syncs would otherwise hold the shutdown open for their whole timeout.
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        std::process::exit(0);
    });
}
