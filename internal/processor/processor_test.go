package processor

import (
	"context"
	"errors"
	"io"
	"net"
	"regexp"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/config"
	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve serves s over an in-memory connection, as cmd/extproc serves it: on
// grpc-go with s's codec and service.
func serve(t *testing.T, s *Server) extprocv3.ExternalProcessorClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(grpc.ForceServerCodecV2(s.Codec()))
	s.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
	})
	return extprocv3.NewExternalProcessorClient(conn)
}

// exchangeStep is one message Envoy sends and the answer it must get.
type exchangeStep struct {
	send *extprocv3.ProcessingRequest
	want *extprocv3.ProcessingResponse
}

// replay runs one ext_proc stream per script, as Envoy does per HTTP request,
// failing on any step whose answer differs or never came.
func replay(t *testing.T, c extprocv3.ExternalProcessorClient, script []exchangeStep) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := c.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range script {
		if err := stream.Send(st.send); err != nil {
			t.Fatalf("step %d: send: %v", i, err)
		}
		got, err := stream.Recv()
		if err != nil {
			t.Fatalf("step %d: no answer: %v", i, err)
		}
		if diff := cmp.Diff(maskRetryAfterMs(st.want), maskRetryAfterMs(got), protocmp.Transform()); diff != "" {
			t.Fatalf("step %d: answer (-want +got):\n%s", i, diff)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the script: got %v, want the server to end the stream cleanly", err)
	}
}

// retryAfterMsRE matches the retryAfterMs of a rejection body, whose value
// depends on the real clock (the limiter's tests check it).
var retryAfterMsRE = regexp.MustCompile(`"retryAfterMs":[0-9]+`)

// maskRetryAfterMs returns a copy of r whose immediate response body has its
// retryAfterMs replaced by a placeholder; r itself when it has no body.
func maskRetryAfterMs(r *extprocv3.ProcessingResponse) *extprocv3.ProcessingResponse {
	if len(r.GetImmediateResponse().GetBody()) == 0 {
		return r
	}
	r = proto.Clone(r).(*extprocv3.ProcessingResponse)
	ir := r.GetImmediateResponse()
	ir.Body = retryAfterMsRE.ReplaceAll(ir.Body, []byte(`"retryAfterMs":N`))
	return r
}

func headers(eos bool, kv ...string) *extprocv3.ProcessingRequest {
	hm := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	return &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hm, EndOfStream: eos}},
		Attributes: map[string]*structpb.Struct{extProcAttributes: {Fields: map[string]*structpb.Value{
			sourceAddressAttr: structpb.NewStringValue("192.0.2.7:41000")}}},
		ProtocolConfig: &extprocv3.ProtocolConfiguration{RequestBodyMode: extprocfilterv3.ProcessingMode_BUFFERED},
	}
}

func postHeaders(kv ...string) *extprocv3.ProcessingRequest {
	return headers(false, append([]string{":method", "POST", ":authority", "mcp.example.com", ":path", "/mcp", "content-type", "application/json"}, kv...)...)
}

func body(b string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(b), EndOfStream: true}}}
}

func withMetadata(r *extprocv3.ProcessingResponse, kv ...string) *extprocv3.ProcessingResponse {
	fields := map[string]*structpb.Value{}
	for i := 0; i+1 < len(kv); i += 2 {
		fields[kv[i]] = structpb.NewStringValue(kv[i+1])
	}
	r.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{MetadataNamespace: structpb.NewStructValue(&structpb.Struct{Fields: fields})}}
	return r
}

func rejection(status int, b string, hdrs ...string) *extprocv3.ProcessingResponse {
	var set []*corev3.HeaderValueOption
	for i := 0; i+1 < len(hdrs); i += 2 {
		set = append(set, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: hdrs[i], RawValue: []byte(hdrs[i+1])},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
		Headers: &extprocv3.HeaderMutation{SetHeaders: set},
		Body:    []byte(b),
		Details: "mcp_rate_limited",
	}}}
}

func policy(mod func(*config.Server)) *config.Policy {
	s := config.Server{
		Name:        "test",
		Tools:       map[string]config.Tool{"search": {Name: "search", Cost: 1, Shared: []config.Bucket{{MaxTokens: 1, RefillPeriod: 20 * time.Second}}}},
		Methods:     map[string]config.Method{},
		Identity:    []config.IdentitySource{{SourceAddress: true}},
		Response:    config.Response{ErrorCode: -32029, HTTPStatus: 429, Format: config.FormatJSONRPCError, Message: "Rate limit exceeded"},
		FailureMode: config.FailOpen,
		Shared:      []config.Bucket{{MaxTokens: 100, RefillPeriod: time.Minute}},
	}
	if mod != nil {
		mod(&s)
	}
	return &config.Policy{Servers: []config.Server{s}, Redis: config.Redis{Timeout: 20 * time.Millisecond}}
}

const searchCall = `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}`

func TestProcess(t *testing.T) {
	searchAllowed := withMetadata(continueBody(), "decision", "allowed", "method", "tools/call", "tool", "search")
	limited := rejection(429,
		`{"jsonrpc":"2.0","id":7,"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":20,"retryAfterMs":20000,"limit":"tool:search","scope":"shared"}}}`,
		"content-type", "application/json", "retry-after", "20",
		"ratelimit-policy", `"tool:search";q=1;w=20`, "ratelimit", `"tool:search";r=0;t=20`)
	withMetadata(limited, "decision", "limited", "method", "tools/call", "tool", "search", "limit", "tool:search")

	tests := []struct {
		name    string
		store   bucket.Store
		policy  *config.Policy
		scripts [][]exchangeStep
	}{
		{
			name:   "allowed then rejected with every header and the exact body",
			policy: policy(nil),
			scripts: [][]exchangeStep{
				{{postHeaders(), continueHeaders()}, {body(searchCall), searchAllowed}},
				{{postHeaders(), continueHeaders()}, {body(searchCall), limited}},
			},
		},
		{
			name:   "a wrong content-type is still limited",
			policy: policy(nil),
			scripts: [][]exchangeStep{
				{{postHeaders("content-type", "text/plain"), continueHeaders()}, {body(searchCall), searchAllowed}},
				{{postHeaders("content-type", "text/plain"), continueHeaders()}, {body(searchCall), limited}},
			},
		},
		{
			name:   "a request without body is decided at the headers phase and continues",
			policy: policy(nil),
			scripts: [][]exchangeStep{
				{{headers(true, ":method", "GET", ":authority", "mcp.example.com", ":path", "/mcp"), continueHeaders()}},
				{{headers(true, ":method", "DELETE", ":authority", "mcp.example.com", ":path", "/mcp"), continueHeaders()}},
			},
		},
		{
			name:   "a body that is not JSON is refused with a parse error",
			policy: policy(nil),
			scripts: [][]exchangeStep{
				{{postHeaders(), continueHeaders()}, {body(`{{{`), withMetadata(func() *extprocv3.ProcessingResponse {
					r := rejection(400, `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error: the request body is not JSON"}}`,
						"content-type", "application/json")
					r.GetImmediateResponse().Details = "mcp_rate_limit_unreadable_body"
					return r
				}(), "decision", "unreadable")}},
			},
		},
		{
			name:   "a body that is not JSON passes with unreadableBody continue",
			policy: policy(func(s *config.Server) { s.UnreadableBody = config.UnreadableContinue }),
			scripts: [][]exchangeStep{
				{{postHeaders(), continueHeaders()}, {body(`{{{`), continueBody()}},
			},
		},
		{
			name:   "an unlimited method carries its label",
			policy: policy(nil),
			scripts: [][]exchangeStep{
				{{postHeaders(), continueHeaders()}, {body(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`), withMetadata(continueBody(), "decision", "unlimited", "method", "other")}},
			},
		},
		{
			name:   "trailers after a buffered body are answered",
			policy: policy(nil),
			scripts: [][]exchangeStep{
				{{postHeaders(), continueHeaders()},
					{&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(searchCall)}}}, searchAllowed},
					{&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}}, continueTrailers()}},
			},
		},
		{
			name:   "response phases sent by a misconfigured Envoy are answered",
			policy: policy(nil),
			scripts: [][]exchangeStep{
				{{&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{}}},
					&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}}},
			},
		},
		{
			name:   "fail open when the store hangs past the deadline",
			store:  hangingStore{},
			policy: policy(nil),
			scripts: [][]exchangeStep{
				{{postHeaders(), continueHeaders()}, {body(searchCall), withMetadata(continueBody(), "decision", "failed_open", "method", "tools/call", "tool", "search")}},
			},
		},
		{
			name:   "fail closed when the store hangs past the deadline",
			store:  hangingStore{},
			policy: policy(func(s *config.Server) { s.FailureMode = config.FailClosed }),
			scripts: [][]exchangeStep{
				{{postHeaders(), continueHeaders()}, {body(searchCall), withMetadata(func() *extprocv3.ProcessingResponse {
					r := rejection(503, `{"jsonrpc":"2.0","id":7,"error":{"code":-32603,"message":"Rate limiter unavailable"}}`,
						"content-type", "application/json", "retry-after", "1")
					r.GetImmediateResponse().Details = "mcp_rate_limit_unavailable"
					return r
				}(), "decision", "failed_closed", "method", "tools/call", "tool", "search")}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := serve(t, New(limiter.New(tt.policy, limiter.Options{Store: tt.store}), Options{}))
			for _, script := range tt.scripts {
				replay(t, c, script)
			}
		})
	}
}

func TestStreamedBodyIsGatheredBeforeDeciding(t *testing.T) {
	c := serve(t, New(limiter.New(policy(nil), limiter.Options{}), Options{}))
	streamed := postHeaders()
	streamed.ProtocolConfig = &extprocv3.ProtocolConfiguration{RequestBodyMode: extprocfilterv3.ProcessingMode_STREAMED}
	chunk := func(b string, eos bool) *extprocv3.ProcessingRequest {
		return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(b), EndOfStream: eos}}}
	}
	replay(t, c, []exchangeStep{
		{streamed, continueHeaders()},
		{chunk(searchCall[:20], false), continueBody()},
		{chunk(searchCall[20:], true), withMetadata(continueBody(), "decision", "allowed", "method", "tools/call", "tool", "search")},
	})

}

func TestPerUserBucketUsesSourceAddressAttribute(t *testing.T) {
	p := policy(func(s *config.Server) {
		s.Tools = map[string]config.Tool{"search": {Name: "search", Cost: 1, PerUser: []config.Bucket{{MaxTokens: 1, RefillPeriod: 20 * time.Second}}}}
	})
	c := serve(t, New(limiter.New(p, limiter.Options{}), Options{}))
	replay(t, c, []exchangeStep{{postHeaders(), continueHeaders()}, {body(searchCall), withMetadata(continueBody(), "decision", "allowed", "method", "tools/call", "tool", "search")}})
	second := rejection(429,
		`{"jsonrpc":"2.0","id":7,"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":20,"retryAfterMs":20000,"limit":"tool:search","scope":"perUser"}}}`,
		"content-type", "application/json", "retry-after", "20",
		"ratelimit-policy", `"user-tool:search";q=1;w=20`, "ratelimit", `"user-tool:search";r=0;t=20`)
	replay(t, c, []exchangeStep{{postHeaders(), continueHeaders()}, {body(searchCall), withMetadata(second, "decision", "limited", "method", "tools/call", "tool", "search", "limit", "tool:search")}})

}

func TestHeadersFromAttributesWhenTheHeadersPhaseIsSkipped(t *testing.T) {
	p := policy(func(s *config.Server) {
		s.Match = config.Match{Authority: "mcp.example.com", PathPrefix: "/mcp"}
		s.Identity = []config.IdentitySource{{Header: "x-user-id"}}
		s.Tools = map[string]config.Tool{"search": {Name: "search", Cost: 1, PerUser: []config.Bucket{{MaxTokens: 1, RefillPeriod: 20 * time.Second}}}}
	})
	c := serve(t, New(limiter.New(p, limiter.Options{}), Options{}))
	bodyOnly := func(user string) *extprocv3.ProcessingRequest {
		r := body(searchCall)
		r.ProtocolConfig = &extprocv3.ProtocolConfiguration{RequestBodyMode: extprocfilterv3.ProcessingMode_BUFFERED}
		r.Attributes = map[string]*structpb.Struct{extProcAttributes: {Fields: map[string]*structpb.Value{
			"request.host":                 structpb.NewStringValue("mcp.example.com"),
			"request.path":                 structpb.NewStringValue("/mcp"),
			"request.headers['x-user-id']": structpb.NewStringValue(user),
		}}}
		return r
	}
	allowed := withMetadata(continueBody(), "decision", "allowed", "method", "tools/call", "tool", "search")
	replay(t, c, []exchangeStep{{bodyOnly("alice"), allowed}})
	replay(t, c, []exchangeStep{{bodyOnly("bob"), allowed}})
	limited := rejection(429,
		`{"jsonrpc":"2.0","id":7,"error":{"code":-32029,"message":"Rate limit exceeded","data":{"retryAfterSeconds":20,"retryAfterMs":20000,"limit":"tool:search","scope":"perUser"}}}`,
		"content-type", "application/json", "retry-after", "20",
		"ratelimit-policy", `"user-tool:search";q=1;w=20`, "ratelimit", `"user-tool:search";r=0;t=20`)
	replay(t, c, []exchangeStep{{bodyOnly("alice"), withMetadata(limited, "decision", "limited", "method", "tools/call", "tool", "search", "limit", "tool:search")}})

}

func TestUnknownMessageEndsTheStream(t *testing.T) {
	c := serve(t, New(limiter.New(policy(nil), limiter.Options{}), Options{}))
	stream, err := c.Process(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&extprocv3.ProcessingRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err == nil {
		t.Fatal("got an answer, want the stream ended with an error")
	}

}

type hangingStore struct{}

func (hangingStore) Take(ctx context.Context, _ []bucket.Charge) (bucket.Result, error) {
	<-ctx.Done()
	return bucket.Result{}, ctx.Err()
}
