import { meshPackageConfig } from '../../tsup.config.base';

export default meshPackageConfig({ index: 'src/index.ts', cli: 'src/cli.ts' });
