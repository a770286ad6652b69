export const PACKAGE_NAME = '@mesh-agent/shared-config';
