package config

import "testing"

// A plan that limits writes as `1:` must be nameable as the default the
// same way: Parse takes plan names of any scalar YAML type, so `default: 1`
// naming the plan `1` must be accepted too (or both refused).
func TestTheDefaultNamesAPlanAsLimitsDoes(t *testing.T) {
	_, errDefault := Parse([]byte(`
rateLimiting: {shared: {maxTokens: 10, refillPeriod: 1m}}
plans:
  from: [{jwtClaim: plan}]
  default: 1
  limits: {1: {perUser: {maxTokens: 1, refillPeriod: 1m}}}
`))
	_, errPlan := Parse([]byte(`
rateLimiting: {shared: {maxTokens: 10, refillPeriod: 1m}}
plans:
  from: [{jwtClaim: plan}]
  limits: {1: {perUser: {maxTokens: 1, refillPeriod: 1m}}}
`))
	if (errDefault == nil) != (errPlan == nil) {
		t.Errorf("plan named 1: limits alone -> %v; with default: 1 -> %v; want both accepted or both refused", errPlan, errDefault)
	}
}
