package processor

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

func TestJWTPayloadsAreReadInNameOrder(t *testing.T) {
	payload := func(sub string) *structpb.Value {
		return structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"sub": structpb.NewStringValue(sub)}})
	}
	req := &extprocv3.ProcessingRequest{MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		jwtAuthnNamespace: {Fields: map[string]*structpb.Value{
			"z_payload": payload("zed"), "a_payload": payload("ann"), "m_payload": payload("max"),
			"not_a_struct": structpb.NewStringValue("ignored"),
		}},
	}}}
	// Map iteration order is random: repeat so a wrong order shows up.
	for range 20 {
		var x exchange
		in := fromProto(req)
		x.observe(&in)
		var got []string
		for _, p := range x.req.JWTPayloads {
			got = append(got, p["sub"].(string))
		}
		if len(got) != 3 || got[0] != "ann" || got[1] != "max" || got[2] != "zed" {
			t.Fatalf("got payload order %v, want [ann max zed]", got)
		}
	}
}

func TestHeadersGiveTheFirstValueOfAName(t *testing.T) {
	hl := headerList{
		{Key: "x-user-id", RawValue: []byte("alice")},
		{Key: "x-user-id", RawValue: []byte("mallory")},
		{Key: "legacy", Value: "value-field"},
	}
	wire, err := proto.Marshal(&corev3.HeaderMap{Headers: hl})
	if err != nil {
		t.Fatal(err)
	}
	views := map[string]limiter.Headers{"decoded list": hl, "wire bytes": wireHeaders(wire)}
	tests := []struct{ name, want string }{{"x-user-id", "alice"}, {"legacy", "value-field"}, {"absent", ""}}
	for view, h := range views {
		for _, tt := range tests {
			if got := h.Get(tt.name); got != tt.want {
				t.Errorf("%s: Get(%q) got %q, want %q", view, tt.name, got, tt.want)
			}
		}
	}
}
