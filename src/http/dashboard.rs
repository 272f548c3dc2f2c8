//! The dashboard at `GET /`: one page of plain HTML, CSS and JavaScript, with TradingView's Lightweight Charts
//! vendored beside it (`dashboard/vendor/`), all embedded in the binary. It reads the JSON endpoints and follows
//! `/api/v1/events`; nothing is fetched from anywhere else, which its Content-Security-Policy enforces.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

/// One embedded file and its media type.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every file the dashboard is made of. The chart library's path names its version, so it may be cached for good.
const ASSETS: [Asset; 6] = [
    Asset { path: "/", content_type: "text/html; charset=utf-8", body: include_bytes!("dashboard/index.html") },
    Asset {
        path: "/dashboard/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/app.js"),
    },
    Asset {
        path: "/dashboard/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("dashboard/style.css"),
    },
    Asset {
        path: "/dashboard/vendor/lightweight-charts-5.2.1.standalone.production.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/vendor/lightweight-charts-5.2.1.standalone.production.js"),
    },
    Asset {
        path: "/dashboard/vendor/LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("dashboard/vendor/LICENSE"),
    },
    Asset {
        path: "/dashboard/vendor/NOTICE",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("dashboard/vendor/NOTICE"),
    },
];

/// Same origin only: the page can load nothing from the internet. Lightweight Charts sets inline styles.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Registers one GET/HEAD route per embedded file.
pub fn routes(cfg: &mut web::ServiceConfig) {
    for asset in &ASSETS {
        cfg.service(super::get_and_head(asset.path, move || async move { serve(asset) }));
    }
}

fn serve(asset: &'static Asset) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(asset.body)
}
