// The built-in issuer (issue 13): mesh root and host CAs, workload certificates, their files.
export { createRootCa, createIntermediateCa, validateCaMaterial, writeCaDir, loadCaDir, caDirFiles, CA_FILES, NOT_BEFORE_BACKDATE_MS } from './ca';
export type { CaMaterial, CaFileLabels, RootCaOptions, IntermediateCaOptions, ValidatedCa } from './ca';
export { issueWorkloadCertificate, writeWorkloadFiles, WORKLOAD_FILES } from './workload';
export type { WorkloadCertificate, IssueOptions, WorkloadFilePaths } from './workload';
export type { FileOwner } from './atomic-file';
