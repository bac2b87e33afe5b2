// The library product's one import: `import PPFlowKit` gives a client package the toolkit's library
// modules, from the checkpoint readers to the trainer, without naming each (see docs/LIBRARY.md).
// The command-line modules (PPCLI and the executables) are not part of it.
@_exported import PPFileIO
@_exported import PPTensor
@_exported import PPJSON
@_exported import PPSafetensors
@_exported import PPTorchFormat
@_exported import PPCheckpoint
@_exported import PPImage
@_exported import PPKernels
@_exported import PPModel
@_exported import PPModelIO
@_exported import PPConvert
@_exported import PPSample
@_exported import PPVAE
@_exported import PPLatents
@_exported import PPTrain
@_exported import PPEval
