// Package console is the web console that agent-server serves at /: two
// plain HTML pages (the conversations at /, the operations view at
// OperationsPath), a stylesheet and their scripts, embedded with go:embed,
// with no build step. The operator enters the session API key once; the page
// keeps it in sessionStorage and sends it only in the X-Session-API-Key
// header (REST) and in the subprotocol entry (WebSocket), never in a URL.
//
// Every response carries a strict Content-Security-Policy: scripts, styles
// and connections from the page's own origin only, nothing inline, no
// framing, no forms posting elsewhere.
package console

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// ContentSecurityPolicy is the policy every console response carries.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Prefix is where the console's assets are served.
const Prefix = "/console/"

// OperationsPath is the operations page: plugins, sockets, conversations
// and the store at a glance, drawn from GET /api/operations.
const OperationsPath = "/operations"

// Handler serves the pages at / and OperationsPath and their assets under
// Prefix.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil { // the embedded tree is fixed at build time
		panic(err)
	}
	files := http.StripPrefix(Prefix, http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		switch r.URL.Path {
		case "/":
			http.ServeFileFS(w, r, sub, "index.html")
			return
		case OperationsPath:
			http.ServeFileFS(w, r, sub, "ops.html")
			return
		}
		files.ServeHTTP(w, r)
	})
}
