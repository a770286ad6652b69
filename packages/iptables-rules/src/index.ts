export const PACKAGE_NAME = '@mesh-agent/iptables-rules';
