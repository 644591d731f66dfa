# Default attestation (appraisal) policy of Inclavare's KBS: EAR trust claims per TEE.
# input = annotated evidence ({"<tee>": claims, "report_data", "runtime_data_claims", ...});
# data.reference = reference values by name (lists; set with `inclavare kbs admin reference-value set`).
# Values follow EAR: 2/3 affirming, 32-95 warning, 96+ contraindicated, 0 no claim.
package policy

import rego.v1

default executables := 33

default hardware := 97

default configuration := 36

rv(name) := value if value := data.reference[name]

matches(name, v) if v in rv(name)

matches(name, v) if {
	not is_array(rv(name))
	v == rv(name)
}

# --- Trustee's sample TEE (testing only; the default resource policy denies it) ---
executables := 3 if matches("launch_digest", input.sample.launch_digest)

hardware := 2 if {
	matches("svn", input.sample.svn)
	matches("major_version", input.sample.platform_version.major)
	input.sample.platform_version.minor >= min_minor
}

min_minor := m if {
	is_array(rv("minimum_minor_version"))
	m := rv("minimum_minor_version")[0]
}

min_minor := m if {
	is_number(rv("minimum_minor_version"))
	m := rv("minimum_minor_version")
}

configuration := 2 if input.sample.debug == false

# --- SGX (real or simulated quotes) ---
executables := 3 if {
	matches("mr_enclave", input.sgx.mr_enclave)
	matches("mr_signer", input.sgx.mr_signer)
}

hardware := 2 if input.sgx.tcb_status == "UpToDate"

hardware := 32 if {
	input.sgx.tcb_status in {"SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"}
}

configuration := 2 if input.sgx.debug == false

# --- TDX ---
executables := 3 if matches("mr_td", input.tdx.mr_td)

hardware := 2 if input.tdx.tcb_status == "UpToDate"

configuration := 2 if input.tdx.debug == false

# --- SEV-SNP ---
executables := 3 if matches("snp_launch_measurement", input.snp.measurement)

hardware := 2 if {
	input.snp.tcb_status == "Verified"
	matches("snp_reported_tcb_bootloader", input.snp.reported_tcb_bootloader)
	matches("snp_reported_tcb_tee", input.snp.reported_tcb_tee)
	matches("snp_reported_tcb_snp", input.snp.reported_tcb_snp)
	matches("snp_reported_tcb_microcode", input.snp.reported_tcb_microcode)
}

configuration := 2 if input.snp.debug == false

# --- TPM (additional evidence beside a CPU TEE, or alone) ---
# The AK is trusted as a reference value (as Trustee): tpm_trusted_ak = SHA-256 of its SPKI (hex).
# Each reference value tpm_pcr<N> names the accepted sha256 values of PCR N; all must match.
hardware := 2 if matches("tpm_trusted_ak", input.tpm.ak_public_sha256)

tpm_pcr_refs[index] := value if {
	some name, value in data.reference
	startswith(name, "tpm_pcr")
	index := substring(name, 7, -1)
}

executables := 3 if {
	input.tpm
	count(tpm_pcr_refs) > 0
	every index, _ in tpm_pcr_refs {
		matches(concat("", ["tpm_pcr", index]), input.tpm.pcrs[index])
	}
}

# An SNP guest launched with debug allowed: the host can read and write its memory. SGX and TDX
# debug enclaves never get here (the verifier refuses them, as Intel's appraisal does); for SNP the
# bit is the guest owner's launch policy, so it is judged here: contraindicated, whatever else.
configuration := 96 if input.snp.debug == true
