package command

// Flag names and the environment variables that set them. Every flag a CI job
// needs has an HCPSNAP_ variable; the names are constants so that help, tests
// and documentation cannot drift apart.
const (
	FlagKubeconfig = "kubeconfig"
	EnvKubeconfig  = "HCPSNAP_KUBECONFIG"
	FlagContext    = "context"
	EnvContext     = "HCPSNAP_CONTEXT"
	FlagLogLevel   = "log-level"
	EnvLogLevel    = "HCPSNAP_LOG_LEVEL"
	FlagLogFormat  = "log-format"
	EnvLogFormat   = "HCPSNAP_LOG_FORMAT"
	FlagOutput     = "output"
	EnvOutput      = "HCPSNAP_OUTPUT"
)

// Output formats accepted by -o/--output.
const (
	OutputText     = "text"
	OutputJSON     = "json"
	OutputMarkdown = "markdown"
)
