package plugins

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/agent-server/agent-server/core"
	"github.com/agent-server/agent-server/plugins/authpb"
)

// This file is the only place that knows both the wire (authpb) and the
// domain (core, Info) types.

func infoToPB(i Info) *authpb.InfoResponse {
	return &authpb.InfoResponse{
		Name:      i.Name,
		Version:   i.Version,
		Inputs:    inputsToPB(i.Inputs),
		WantsKeys: i.WantsKeys,
	}
}

func infoFromPB(r *authpb.InfoResponse) Info {
	return Info{
		Name:      r.GetName(),
		Version:   r.GetVersion(),
		Inputs:    inputsFromPB(r.GetInputs()),
		WantsKeys: r.GetWantsKeys(),
	}
}

func inputsToPB(in Inputs) *authpb.Inputs {
	return &authpb.Inputs{
		QueryParams:       in.QueryParams,
		Headers:           in.Headers,
		Subprotocol:       in.Subprotocol,
		FirstMessage:      in.FirstMessage,
		ClientCertificate: in.ClientCertificate,
		Request:           in.Request,
	}
}

func inputsFromPB(in *authpb.Inputs) Inputs {
	return Inputs{
		QueryParams:       in.GetQueryParams(),
		Headers:           canonicalHeaders(in.GetHeaders()),
		Subprotocol:       in.GetSubprotocol(),
		FirstMessage:      in.GetFirstMessage(),
		ClientCertificate: in.GetClientCertificate(),
		Request:           in.GetRequest(),
	}
}

func canonicalHeaders(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = http.CanonicalHeaderKey(n)
	}
	return out
}

func configureToPB(r ConfigureRequest) *authpb.ConfigureRequest {
	return &authpb.ConfigureRequest{ConfigJson: r.Config, KeyDigests: r.KeyDigests, RuntimeKeyDigests: r.RuntimeKeyDigests}
}

func configureFromPB(r *authpb.ConfigureRequest) ConfigureRequest {
	return ConfigureRequest{Config: r.GetConfigJson(), KeyDigests: r.GetKeyDigests(), RuntimeKeyDigests: r.GetRuntimeKeyDigests()}
}

// requestToPB converts req for a plugin that reads in: the routing metadata
// always, and of the credential-bearing parts only those it declared.
func requestToPB(req *core.Request, in Inputs) *authpb.AuthenticateRequest {
	pb := &authpb.AuthenticateRequest{
		Route:      string(req.Route),
		Method:     req.Method,
		Path:       req.Path,
		PathParams: req.PathParams,
		RemoteAddr: req.RemoteAddr,
		Origin:     req.Origin,
	}
	for _, name := range in.QueryParams {
		if v, ok := req.Query[name]; ok {
			if pb.Query == nil {
				pb.Query = make(map[string]*authpb.Values, len(in.QueryParams))
			}
			pb.Query[name] = &authpb.Values{Values: v}
		}
	}
	for _, name := range in.Headers {
		if v := headerValues(req.Header, name); len(v) > 0 {
			if pb.Header == nil {
				pb.Header = make(map[string]*authpb.Values, len(in.Headers))
			}
			pb.Header[name] = &authpb.Values{Values: v}
		}
	}
	pb.Subprotocols, pb.FirstMessage, pb.ClientCertificates = declaredParts(req, in)
	return pb
}

// declaredParts returns the subprotocols, first message and client
// certificates (DER) of req that in declares; nil for the others.
func declaredParts(req *core.Request, in Inputs) (subprotocols []string, first []byte, certs [][]byte) {
	if in.Subprotocol {
		subprotocols = req.Subprotocols
	}
	if in.FirstMessage {
		first = req.FirstMessage
	}
	if in.ClientCertificate {
		for _, c := range req.ClientCertificates {
			certs = append(certs, c.Raw)
		}
	}
	return subprotocols, first, certs
}

// requestToFlat converts req for a plugin that reads in, as requestToPB
// does, into the flat form of protocol 3's Stream.
func requestToFlat(req *core.Request, in Inputs) *authpb.Request {
	pb := &authpb.Request{
		Route:      string(req.Route),
		Method:     req.Method,
		Path:       req.Path,
		RemoteAddr: req.RemoteAddr,
		Origin:     req.Origin,
	}
	if len(req.PathParams) > 0 {
		pb.PathParams = make([]string, 0, 2*len(req.PathParams))
		for k, v := range req.PathParams {
			pb.PathParams = append(pb.PathParams, k, v)
		}
	}
	for _, name := range in.QueryParams {
		for _, v := range req.Query[name] {
			pb.Query = append(pb.Query, name, v)
		}
	}
	for _, name := range in.Headers {
		for _, v := range headerValues(req.Header, name) {
			pb.Header = append(pb.Header, name, v)
		}
	}
	pb.Subprotocols, pb.FirstMessage, pb.ClientCertificates = declaredParts(req, in)
	return pb
}

// requestFromFlat is requestFromPB for the flat form. A list with an odd
// number of entries loses its last one.
func requestFromFlat(pb *authpb.Request) *core.Request {
	req := &core.Request{
		Route:        core.Route(pb.GetRoute()),
		Method:       pb.GetMethod(),
		Path:         pb.GetPath(),
		RemoteAddr:   pb.GetRemoteAddr(),
		Subprotocols: pb.GetSubprotocols(),
		Origin:       pb.GetOrigin(),
		FirstMessage: pb.GetFirstMessage(),
	}
	if kv := pb.GetPathParams(); len(kv) > 1 {
		req.PathParams = make(map[string]string, len(kv)/2)
		for k := 0; k+1 < len(kv); k += 2 {
			req.PathParams[kv[k]] = kv[k+1]
		}
	}
	kv := pb.GetQuery()
	req.Query = make(map[string][]string, len(kv)/2)
	for k := 0; k+1 < len(kv); k += 2 {
		req.Query[kv[k]] = append(req.Query[kv[k]], kv[k+1])
	}
	kv = pb.GetHeader()
	req.Header = make(http.Header, len(kv)/2)
	for k := 0; k+1 < len(kv); k += 2 {
		name := http.CanonicalHeaderKey(kv[k])
		req.Header[name] = append(req.Header[name], kv[k+1])
	}
	req.ClientCertificates = parseChain(pb.GetClientCertificates())
	return req
}

// parseChain parses a verified certificate chain, DER, leaf first. The host
// verified it; a certificate that does not even parse ends it, so a plugin
// never sees a chain with a gap.
func parseChain(ders [][]byte) []*x509.Certificate {
	var out []*x509.Certificate
	for _, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			break
		}
		out = append(out, c)
	}
	return out
}

func requestFromPB(pb *authpb.AuthenticateRequest) *core.Request {
	req := &core.Request{
		Route:        core.Route(pb.GetRoute()),
		Method:       pb.GetMethod(),
		Path:         pb.GetPath(),
		PathParams:   pb.GetPathParams(),
		Query:        make(map[string][]string, len(pb.GetQuery())),
		Header:       make(http.Header, len(pb.GetHeader())),
		RemoteAddr:   pb.GetRemoteAddr(),
		Subprotocols: pb.GetSubprotocols(),
		Origin:       pb.GetOrigin(),
		FirstMessage: pb.GetFirstMessage(),
	}
	for k, v := range pb.GetQuery() {
		req.Query[k] = v.GetValues()
	}
	for k, v := range pb.GetHeader() {
		ck := http.CanonicalHeaderKey(k)
		req.Header[ck] = append(req.Header[ck], v.GetValues()...)
	}
	req.ClientCertificates = parseChain(pb.GetClientCertificates())
	return req
}

func resultToPB(r core.Result) *authpb.AuthenticateResponse {
	pb := &authpb.AuthenticateResponse{}
	if r.MaxAge != 0 {
		pb.MaxAge = durationpb.New(r.MaxAge)
	}
	switch r.Decision {
	case core.Abstain:
		pb.Decision = authpb.Decision_DECISION_ABSTAIN
	case core.Allow:
		pb.Decision, pb.Principal = authpb.Decision_DECISION_ALLOW, principalToPB(r.Principal)
	case core.Deny:
		pb.Decision, pb.Reason = authpb.Decision_DECISION_DENY, r.Reason
	case core.Error:
		msg := "unspecified failure"
		if r.Err != nil {
			msg = r.Err.Error()
		}
		pb.Decision, pb.Error, pb.RequestFault = authpb.Decision_DECISION_ERROR, msg, r.RequestFault
	default:
		return &authpb.AuthenticateResponse{Decision: authpb.Decision_DECISION_ERROR, Error: fmt.Sprintf("unknown decision %d", r.Decision)}
	}
	return pb
}

func resultFromPB(pb *authpb.AuthenticateResponse) core.Result {
	var res core.Result
	switch pb.GetDecision() {
	case authpb.Decision_DECISION_ABSTAIN:
		res = core.Abstained()
	case authpb.Decision_DECISION_ALLOW:
		if pb.GetPrincipal() == nil {
			return core.Failed(errors.New("plugin allowed without a principal"))
		}
		res = core.Allowed(principalFromPB(pb.GetPrincipal()))
	case authpb.Decision_DECISION_DENY:
		res = core.Denied(pb.GetReason())
	case authpb.Decision_DECISION_ERROR:
		res = core.Failed(fmt.Errorf("plugin reported: %s", pb.GetError()))
		res.RequestFault = pb.GetRequestFault()
	default:
		return core.Failed(fmt.Errorf("plugin answered unknown decision %d", pb.GetDecision()))
	}
	if pb.GetMaxAge() != nil {
		res.MaxAge = pb.GetMaxAge().AsDuration()
	}
	return res
}

func principalToPB(p *core.Principal) *authpb.Principal {
	if p == nil {
		return nil
	}
	pb := &authpb.Principal{Subject: p.Subject, Scopes: p.Scopes, Claims: p.Claims, Roles: p.Roles}
	if !p.Expiry.IsZero() {
		pb.Expiry = timestamppb.New(p.Expiry)
	}
	return pb
}

func principalFromPB(pb *authpb.Principal) *core.Principal {
	p := &core.Principal{Subject: pb.GetSubject()}
	if len(pb.GetScopes()) > 0 {
		p.Scopes = pb.GetScopes()
	}
	if len(pb.GetClaims()) > 0 {
		p.Claims = pb.GetClaims()
	}
	if len(pb.GetRoles()) > 0 {
		p.Roles = pb.GetRoles()
	}
	if pb.GetExpiry() != nil {
		p.Expiry = pb.GetExpiry().AsTime()
	}
	return p
}
