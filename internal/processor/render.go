package processor

import (
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

// MetadataNamespace is the Envoy dynamic metadata namespace that access logs and later filters read.
const MetadataNamespace = "mcp_ratelimit"

// phase is the ext_proc message a decision answers.
type phase uint8

const (
	headersPhase phase = iota
	bodyPhase
	trailersPhase
)

// render turns a decision into the answer to the message of phase ph: a
// continue carrying dynamic metadata, or an ImmediateResponse, as a
// *extprocv3.ProcessingResponse; or, for an allowed answer with quota values,
// a *quotaAnswer that Codec writes as the same message's wire bytes.
func (s *Server) render(d limiter.Decision, ph phase) any {
	if !d.Allow {
		return &extprocv3.ProcessingResponse{
			Response:        &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: immediate(d)},
			DynamicMetadata: s.answers.metadata(d),
		}
	}
	return s.answers.allow(d, ph)
}

// answers caches the protos of allowed answers and of metadata. Their content
// depends only on bounded labels (the policy's names, never the client's), so the
// set is small and each is built once and then shared: gRPC only reads a message
// while it marshals it, and nothing here ever modifies a cached one.
//
// The wire bytes of each cached ProcessingResponse are kept too, for Codec:
// marshalling the metadata Struct (a map of maps) was about 7% of extproc's CPU
// under load through Envoy.
type answers struct {
	m       sync.Map // answerKey → *extprocv3.ProcessingResponse, *structpb.Struct or *fixedAnswer
	n       atomic.Int64
	encoded sync.Map // *extprocv3.ProcessingResponse → its proto encoding (mem.BufferSlice)
}

// maxCachedAnswers bounds the cache across many policy reloads with new names.
const maxCachedAnswers = 10000

type answerKey struct {
	allow bool
	// quota: the key of a *fixedAnswer, the shared part of a quotaAnswer.
	quota                     bool
	ph                        phase
	outcome                   limiter.Outcome
	method, tool, limit, plan string
}

func (a *answers) allow(d limiter.Decision, ph phase) any {
	k := answerKey{allow: true, ph: ph, outcome: d.Outcome, method: d.Method, tool: d.Tool, limit: d.Limit, plan: d.Plan}
	if d.Quota.Header != nil {
		// The quota values change with every request: only the rest is shared.
		k.quota = true
		if f := a.fixed(k, d, ph); f != nil {
			return &quotaAnswer{fixed: f, quota: d.Quota}
		}
		resp := continueFor(ph)
		resp.DynamicMetadata = metadata(d)
		return resp
	}
	if v, ok := a.m.Load(k); ok {
		return v.(*extprocv3.ProcessingResponse)
	}
	resp := continueFor(ph)
	resp.DynamicMetadata = metadata(d)
	a.store(k, resp)
	return resp
}

// fixed returns the shared part of d's quota answer, under key k; nil when it
// does not marshal (then gRPC marshals, and reports, the proto).
func (a *answers) fixed(k answerKey, d limiter.Decision, ph phase) *fixedAnswer {
	if v, ok := a.m.Load(k); ok {
		return v.(*fixedAnswer)
	}
	cont, err := proto.Marshal(continueFor(ph))
	if err != nil {
		return nil
	}
	d.Quota = limiter.Quota{}
	entries, err := proto.Marshal(metadata(d).GetFields()[MetadataNamespace].GetStructValue())
	if err != nil {
		return nil
	}
	f := &fixedAnswer{cont: cont, entries: entries}
	a.store(k, f)
	return f
}

func (a *answers) metadata(d limiter.Decision) *structpb.Struct {
	k := answerKey{outcome: d.Outcome, method: d.Method, tool: d.Tool, limit: d.Limit, plan: d.Plan}
	if v, ok := a.m.Load(k); ok {
		return v.(*structpb.Struct)
	}
	md := metadata(d)
	a.store(k, md)
	return md
}

func (a *answers) store(k answerKey, v any) {
	if a.n.Load() < maxCachedAnswers {
		if _, loaded := a.m.LoadOrStore(k, v); !loaded {
			a.n.Add(1)
			if resp, ok := v.(*extprocv3.ProcessingResponse); ok {
				a.encode(resp)
			}
		}
	}
}

// encode keeps resp's wire bytes for Codec; resp must never change afterwards.
// A response that does not marshal is simply not kept: gRPC will marshal it and
// report the error on its own.
func (a *answers) encode(resp *extprocv3.ProcessingResponse) {
	if b, err := proto.Marshal(resp); err == nil {
		// Kept as the BufferSlice Codec returns, so a send allocates nothing. A
		// SliceBuffer is not pooled: gRPC's Free after each write leaves the
		// shared bytes alone, and gRPC only reads them.
		a.encoded.Store(resp, mem.BufferSlice{mem.SliceBuffer(b)})
	}
}

func immediate(d limiter.Decision) *extprocv3.ImmediateResponse {
	set := make([]*corev3.HeaderValueOption, 0, len(d.Headers))
	for _, h := range d.Headers {
		set = append(set, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: h.Name, RawValue: []byte(h.Value)},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	return &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
		Headers: &extprocv3.HeaderMutation{SetHeaders: set},
		Body:    d.Body,
		Details: d.Details,
	}
}

// metadata is the mcp_ratelimit namespace for access logs, later filters and
// the response headers of allowed answers;
// nil when nothing in the policy applied, so unlimited traffic costs nothing.
func metadata(d limiter.Decision) *structpb.Struct {
	if d.Outcome == limiter.OutcomeUnlimited && d.Method == "" {
		return nil
	}
	fields := map[string]*structpb.Value{
		"decision": structpb.NewStringValue(string(d.Outcome)),
	}
	if d.Method != "" {
		fields["method"] = structpb.NewStringValue(d.Method)
	}
	if d.Tool != "" {
		fields["tool"] = structpb.NewStringValue(d.Tool)
	}
	if d.Limit != "" {
		fields["limit"] = structpb.NewStringValue(d.Limit)
	}
	if d.Plan != "" {
		fields["plan"] = structpb.NewStringValue(d.Plan)
	}
	// The draft-10 header values of an allowed answer, which the shipped
	// Envoy configs add to the response (response_headers_to_add). Allowed
	// answers are sent as quotaAnswer, which writes the same bytes directly.
	if h := d.Quota.Header; h != nil {
		fields[keyRateLimit] = structpb.NewStringValue(d.Quota.RateLimit())
		fields[keyRateLimitPolicy] = structpb.NewStringValue(h.Policy)
	}
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		MetadataNamespace: structpb.NewStructValue(&structpb.Struct{Fields: fields}),
	}}
}

// continueFor is a new continue answer to the message of phase ph.
func continueFor(ph phase) *extprocv3.ProcessingResponse {
	switch ph {
	case headersPhase:
		return continueHeaders()
	case bodyPhase:
		return continueBody()
	default:
		return continueTrailers()
	}
}

func continueHeaders() *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
		RequestHeaders: &extprocv3.HeadersResponse{}}}
}

func continueBody() *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
		RequestBody: &extprocv3.BodyResponse{}}}
}

func continueTrailers() *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
		RequestTrailers: &extprocv3.TrailersResponse{}}}
}
