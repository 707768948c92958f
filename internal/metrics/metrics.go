// Package metrics exports the Prometheus series docs/operations.md documents (Metrics). Labels are bounded:
// servers, methods, tools and limits come from the policy, never from clients.
package metrics

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mcp-ratelimit/extproc/internal/limiter"
)

// Metrics records decisions, streams, store errors and config reloads. It
// implements processor.Observer.
type Metrics struct {
	decisions     *prometheus.CounterVec
	planDecisions *prometheus.CounterVec
	duration      prometheus.Histogram
	storeErrors   *prometheus.CounterVec
	parseErrors   prometheus.Counter
	configReloads *prometheus.CounterVec
	activeStreams prometheus.Gauge
}

// New registers every series on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_ratelimit_decisions_total",
			Help: "Rate-limit decisions by server, method, decision and denying limit.",
		}, []string{"server", "method", "decision", "limit"}),
		// A metric of its own rather than a plan label on decisions_total:
		// the series of policies without plans stay exactly as they were.
		planDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_ratelimit_plan_decisions_total",
			Help: "Rate-limit decisions of users on a plan, by server, plan and decision.",
		}, []string{"server", "plan", "decision"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mcp_ratelimit_decision_duration_seconds",
			Help: "Time to decide one request, store round trip included.",
			// From tens of microseconds (memory store) to the deadline and beyond.
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_ratelimit_store_errors_total",
			Help: "Decisions whose store call failed, by kind (timeout, error).",
		}, []string{"kind"}),
		parseErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mcp_ratelimit_parse_errors_total",
			Help: "Request bodies that were not JSON-RPC and continued unlimited.",
		}),
		configReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcp_ratelimit_config_reloads_total",
			Help: "Policy reloads by result (success, failure).",
		}, []string{"result"}),
		activeStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mcp_ratelimit_active_streams",
			Help: "ext_proc streams open now.",
		}),
	}
	reg.MustRegister(m.decisions, m.planDecisions, m.duration, m.storeErrors, m.parseErrors, m.configReloads, m.activeStreams)
	// Known store error kinds start at zero so alerts on rate() work from the start.
	m.storeErrors.WithLabelValues("timeout")
	m.storeErrors.WithLabelValues("error")
	return m
}

// StreamStarted counts an open ext_proc stream.
func (m *Metrics) StreamStarted() { m.activeStreams.Inc() }

// StreamEnded counts a closed ext_proc stream.
func (m *Metrics) StreamEnded() { m.activeStreams.Dec() }

// Decided records one decision.
func (m *Metrics) Decided(d limiter.Decision, elapsed time.Duration) {
	server := d.Server
	if server == "" {
		server = "none"
	}
	m.decisions.WithLabelValues(server, d.Method, string(d.Outcome), d.Limit).Inc()
	if d.Plan != "" {
		m.planDecisions.WithLabelValues(server, d.Plan, string(d.Outcome)).Inc()
	}
	m.duration.Observe(elapsed.Seconds())
	if d.ParseError {
		m.parseErrors.Inc()
	}
	if d.StoreError != nil {
		kind := "error"
		if isTimeout(d.StoreError) {
			kind = "timeout"
		}
		m.storeErrors.WithLabelValues(kind).Inc()
	}
}

// isTimeout reports a decision deadline that ran out: the context's own error,
// or the socket timeout the Redis client sets from that deadline, which can fire
// a moment before the context notices.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// ConfigReloaded counts a reload attempt.
func (m *Metrics) ConfigReloaded(ok bool) {
	result := "success"
	if !ok {
		result = "failure"
	}
	m.configReloads.WithLabelValues(result).Inc()
}
