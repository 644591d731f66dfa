# Default resource policy of Inclavare's KBS (fails closed).
# input = the EAR token claims; data = {"plugin", "resource-path": [repo, type, tag], "query"}.
# Denies Trustee's `sample` TEE, evidence verified only by the simulated TEE's root, and any
# contraindicated appraisal of any submodule (composite evidence: cpu1... for device evidence). Replace it with `inclavare kbs admin resource-policy set FILE.rego`.
package policy

import rego.v1

default allow := false

evidence := input.submods.cpu0["ear.veraison.annotated-evidence"]

allow if {
	data.plugin == "resource"
	not evidence.sample
	not evidence.simulated
	every _, submod in input.submods {
		submod["ear.status"] != "contraindicated"
	}
}
