export const PACKAGE_NAME = '@mesh-agent/proxy';
