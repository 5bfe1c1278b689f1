package oidc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
)

// maxDocument bounds a discovery document or JWKS read from the network.
const maxDocument = 1 << 20

// errTooSoon is why an unknown kid did not trigger a fetch: the key set was
// fetched less than min_refresh_interval ago.
var errTooSoon = errors.New("the key set was fetched too recently to fetch it again")

// keySet is one fetched JWKS.
type keySet struct {
	kf   keyfunc.Keyfunc
	kids map[string]bool
}

// has reports whether the set holds a key with id kid.
func (k *keySet) has(kid string) bool { return k.kids[kid] }

// fetch is one JWKS fetch in flight; every request waiting for it shares it.
type fetch struct {
	done chan struct{}
	keys *keySet
	err  error
}

// keySource holds an issuer's signing keys and decides when to fetch them:
// every refresh_interval, and when a token names a key it does not hold, at
// most once per min_refresh_interval whatever the number of such tokens.
// While the identity provider is unreachable the keys already held keep
// working.
type keySource struct {
	client      *http.Client
	issuer      string
	jwksURL     string // "" until discovered
	insecure    bool   // allow_insecure_issuer: http:// URLs allowed
	minInterval time.Duration
	log         *slog.Logger
	now         func() time.Time

	keys    atomic.Pointer[keySet] // nil until the first successful fetch
	fetches atomic.Int64           // JWKS fetches started, for tests

	mu        sync.Mutex
	lastFetch time.Time // when the last fetch of any kind started
	inflight  *fetch
}

// keysFor returns the keys to verify a token naming kid ("" for none). When
// the held keys lack kid it fetches them again, unless a fetch started less
// than minInterval ago; then, or when the fetch fails, it returns an error:
// such a token cannot be checked now. fresh reports keys fetched for this
// very question, so a kid they lack is known not to be the issuer's.
func (s *keySource) keysFor(ctx context.Context, kid string) (ks *keySet, fresh bool, err error) {
	if ks := s.keys.Load(); ks != nil && (kid == "" || ks.has(kid)) {
		return ks, false, nil
	}
	s.mu.Lock()
	if ks := s.keys.Load(); ks != nil && (kid == "" || ks.has(kid)) {
		s.mu.Unlock() // a fetch finished while this request waited for the lock
		return ks, false, nil
	}
	f := s.inflight
	if f == nil {
		if !s.lastFetch.IsZero() && s.now().Sub(s.lastFetch) < s.minInterval {
			s.mu.Unlock()
			return nil, false, errTooSoon
		}
		f = s.startLocked()
	}
	s.mu.Unlock()
	select {
	case <-f.done:
		return f.keys, true, f.err
	case <-ctx.Done():
		return nil, false, fmt.Errorf("wait for the key set: %w", ctx.Err())
	}
}

// refresh fetches the keys now unless a fetch is in flight, and waits for
// it. The periodic refresh and Configure call it.
func (s *keySource) refresh(ctx context.Context) error {
	s.mu.Lock()
	f := s.inflight
	if f == nil {
		f = s.startLocked()
	}
	s.mu.Unlock()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startLocked starts a fetch detached from any request, so that a request's
// short deadline never cancels it and the keys serve later requests.
func (s *keySource) startLocked() *fetch {
	f := &fetch{done: make(chan struct{})}
	s.inflight = f
	s.lastFetch = s.now()
	s.fetches.Add(1)
	go func() {
		ks, err := s.load(context.Background())
		s.mu.Lock()
		if err == nil {
			s.keys.Store(ks)
		}
		s.inflight = nil
		s.mu.Unlock()
		if err != nil {
			s.log.Warn("fetching the signing keys failed; the keys already held keep working", "issuer", s.issuer, "error", err)
		}
		f.keys, f.err = ks, err
		close(f.done)
	}()
	return f
}

// run refreshes the keys every interval until ctx ends.
func (s *keySource) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = s.refresh(ctx) // a failure is logged by the fetch
		}
	}
}

// load discovers the JWKS URL if needed and fetches the key set. The
// client's timeout bounds each request.
func (s *keySource) load(ctx context.Context) (*keySet, error) {
	u := s.jwksURLNow()
	if u == "" {
		d, err := s.discover(ctx)
		if err != nil {
			return nil, err
		}
		u = d
	}
	body, err := s.get(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	return parseKeySet(body)
}

func (s *keySource) jwksURLNow() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jwksURL
}

// discover reads the issuer's OpenID configuration and remembers its
// jwks_uri. The document must name the configured issuer exactly.
func (s *keySource) discover(ctx context.Context) (string, error) {
	doc := strings.TrimSuffix(s.issuer, "/") + "/.well-known/openid-configuration"
	body, err := s.get(ctx, doc)
	if err != nil {
		return "", fmt.Errorf("discovery: %w", err)
	}
	var meta struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &meta); err != nil {
		return "", fmt.Errorf("discovery: %s is not an OpenID configuration: %w", doc, err)
	}
	if meta.Issuer != s.issuer {
		return "", fmt.Errorf("discovery: %s names issuer %q, not %q", doc, meta.Issuer, s.issuer)
	}
	if err := checkURL("jwks_uri", meta.JWKSURI, s.insecure); err != nil {
		return "", fmt.Errorf("discovery: %w", err)
	}
	s.mu.Lock()
	s.jwksURL = meta.JWKSURI
	s.mu.Unlock()
	return meta.JWKSURI, nil
}

// get fetches u and returns its body, refusing anything but 200.
func (s *keySource) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if len(body) > maxDocument {
		return nil, fmt.Errorf("GET %s: larger than %d bytes", u, maxDocument)
	}
	return body, nil
}

// parseKeySet turns a JWKS document into a key set. A key this plugin
// cannot use (an unknown key type, an encryption key) is skipped rather
// than failing the whole set; a set with no usable key is an error.
func parseKeySet(body []byte) (*keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("JWKS is not a JSON Web Key Set: %w", err)
	}
	store := jwkset.NewMemoryStorage()
	kids := map[string]bool{}
	for _, raw := range doc.Keys {
		k, err := jwkset.NewJWKFromRawJSON(raw, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			continue
		}
		if use := k.Marshal().USE; use != jwkset.UseSig && use != "" {
			continue
		}
		if err := store.KeyWrite(context.Background(), k); err != nil {
			return nil, fmt.Errorf("store JWK: %w", err)
		}
		kids[k.Marshal().KID] = true
	}
	if len(kids) == 0 {
		return nil, errors.New("JWKS holds no usable signing key")
	}
	kf, err := keyfunc.New(keyfunc.Options{Storage: store, UseWhitelist: []jwkset.USE{jwkset.UseSig, ""}})
	if err != nil {
		return nil, err
	}
	return &keySet{kf: kf, kids: kids}, nil
}

// checkURL refuses a URL that is not absolute https (or http, when insecure
// is allowed).
func checkURL(key, raw string, insecure bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%s %q is not an absolute URL", key, raw)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && insecure:
	case u.Scheme == "http":
		return fmt.Errorf("%s %q is plain http; set allow_insecure_issuer: true to allow it (loopback tests only)", key, raw)
	default:
		return fmt.Errorf("%s %q: want an https URL", key, raw)
	}
	return nil
}
