export const PACKAGE_NAME = '@mesh-agent/iptables-rules';

export { resolveCaptureConfig, CAPTURE_CONFIG_KEYS } from './config';
export type { CaptureRulesConfig, ResolvedCaptureConfig, ConfigSource, ListInput, PortListInput } from './config';
export { readCaptureConfigFile } from './config-file';
export { normalizeIp, parseCidr, ipFamily, cidrToSaveText, cidrToListText } from './addresses';
export type { Cidr, IpFamily } from './addresses';

export { buildRuleSets, jumpRules, isBuiltinChain, CHAINS, OUR_CHAINS, NAT_BUILTIN_CHAINS } from './rules';
export type { Rule, RuleSet, RuleMatch, RuleTarget, Protocol } from './rules';
export {
  ruleSpecArgs,
  ruleSpecText,
  ruleSaveLine,
  renderRestore,
  renderSave,
  renderCheckCommands,
  renderCleanupCommands,
  commandText,
} from './render-save';
export type { CommandArgs } from './render-save';
export { renderListing, listingLine } from './render-listing';
export { parseSave, jumpTarget } from './save-parser';
export type { SavedTable, SavedChain } from './save-parser';

export { SpawnExecutor, DryRunExecutor } from './executor';
export type { Executor, ExecRequest, ExecResult, SpawnExecutorOptions, DryRunExecutorOptions, RecordedCommand } from './executor';
export { detectBackend, parseBackend, binariesFor } from './backend';
export type { BackendChoice, BackendInfo, Binaries } from './backend';

export { planApply, planClean, compareTable, formatDifference, appliedFamilyOf } from './plan';
export type { RestorePlan, RuleDifference, DifferenceKind } from './plan';
export { applyRules, cleanRules, verifyRules } from './manager';
export type { RulesRuntimeOptions, ApplyResult, CleanOptions, CleanResult, VerifyResult } from './manager';
export { DEFAULT_STATE_FILE, readState, writeState } from './state-file';
export type { AppliedState, AppliedFamily } from './state-file';
