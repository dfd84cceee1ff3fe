"""The textbook's experiments as commands: `fastopt paths` and `fastopt compare`.

    fastopt paths     each optimizer's path on f(x, y) = x**2/20 + y**2 from (-7, 2), as a PNG
    fastopt compare   a multi-layer network trained on handwritten digits with each optimizer:
                      loss and accuracy curves (PNG), a table, optionally JSON; with
                      --backend both, fastopt against the NumPy reference, bit for bit;
                      with --family optim, fastopt.optim's classes (torch.optim's names)
                      against their twins in fastopt.reference.optim

These need the optional packages of the `demo` extra (matplotlib, scikit-learn, tqdm):
pip install 'fastopt[demo]'. The modules import them only inside run(), so importing
fastopt.demo.network or fastopt.demo.data needs NumPy alone.
"""
