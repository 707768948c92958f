package bucket

// Scope names what a bucket counts.
type Scope uint8

const (
	ScopeShared     Scope = iota // every limited call to the server: "shared"
	ScopeTool                    // one tool: "tool:<name>"
	ScopeMethod                  // one method: "method:<name>"
	ScopeUser                    // one user: "user:<id>"
	ScopeUserTool                // one user's calls of one tool: "user-tool:<name>:<id>"
	ScopeUserMethod              // one user's calls of one method: "user-method:<name>:<id>"
)

// Key returns the Redis key of a bucket (SPEC §4):
// mcprl:v1:{<server>}:<scope>. name is the tool or method (ignored for shared and
// user scopes); identity is the raw user identity (ignored for non-user scopes),
// stored only as a hex SHA-256 prefix.
func Key(server string, scope Scope, name, identity string) string {
	return ""
}
