package plugins

import (
	"net/http"
	"strings"

	"github.com/agent-server/agent-server/core"
)

// present reports whether any input in is present in req with a non-empty
// value. The host skips a plugin, with no RPC, when none is.
func (in Inputs) present(req *core.Request) bool {
	for _, name := range in.QueryParams {
		for _, v := range req.Query[name] {
			if v != "" {
				return true
			}
		}
	}
	for _, name := range in.Headers {
		for _, v := range headerValues(req.Header, name) {
			if strings.TrimSpace(v) != "" {
				return true
			}
		}
	}
	if in.Subprotocol && len(req.Subprotocols) > 0 {
		return true
	}
	if in.ClientCertificate && len(req.ClientCertificates) > 0 {
		return true
	}
	return in.FirstMessage && len(req.FirstMessage) > 0
}

// empty reports whether the plugin declared no input at all. Such a plugin
// is never skipped.
func (in Inputs) empty() bool {
	return len(in.QueryParams) == 0 && len(in.Headers) == 0 && !in.Subprotocol && !in.FirstMessage && !in.ClientCertificate
}

// headerValues returns the values of header name in h, matching the name in
// any case even when h was built by hand with non-canonical keys.
func headerValues(h http.Header, name string) []string {
	if v, ok := h[http.CanonicalHeaderKey(name)]; ok {
		return v
	}
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return nil
}

// HeaderValue returns the first value of header name in req, matching the
// name in any case. Plugin authors use it to read their declared headers.
func HeaderValue(req *core.Request, name string) string {
	if v := headerValues(req.Header, name); len(v) > 0 {
		return v[0]
	}
	return ""
}
